"""Backpressure, not collapse: at twice the capacity the excess is shed at once, accepted work
completes in bounded time, and a caller who disconnects has its queued work dropped."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.serving import Served, start_serve, stop

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"
CAPACITY_PER_S = 4 / 0.05  # sleepy: 4 instances per 50 ms call


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = start_serve(tmp_path, FNS / "sleepy", FNS / "slow")
    yield s
    stop(s)


async def open_loop(url: str, rate_per_s: float, duration_s: float) -> list[tuple[int, float, str | None]]:
    """Requests at a fixed rate whatever the answers (an open loop): (status, latency, Retry-After)."""
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def one(i: int) -> tuple[int, float, str | None]:
            started = time.perf_counter()
            response = await client.get("/function/sleepy", params={"x": i})
            return response.status_code, time.perf_counter() - started, response.headers.get("retry-after")

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate_per_s * duration_s)):
            await asyncio.sleep(max(0.0, start + i / rate_per_s - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        return await asyncio.gather(*tasks)


def test_twice_the_capacity_is_shed_cleanly(served: Served) -> None:
    results = asyncio.run(open_loop(served.url, 2 * CAPACITY_PER_S, duration_s=3.0))
    statuses = {status for status, _, _ in results}
    assert statuses <= {200, 429}, statuses  # no 5xx, no timeouts: excess refused, not collapsed
    accepted = [latency for status, latency, _ in results if status == 200]
    refused = [retry for status, _, retry in results if status == 429]
    assert refused and all(r is not None and int(r) >= 1 for r in refused)
    assert len(accepted) >= 0.6 * CAPACITY_PER_S * 3.0  # the model kept working near capacity
    assert max(accepted) < 1.5  # bounded by the queue (16 rows = 4 calls of 50 ms), far below the deadline


def test_a_disconnected_callers_queued_work_is_dropped(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=served.url, timeout=10) as ac:
                hold = asyncio.create_task(ac.get("/function/slow", params={"seconds": 1.0}))
                await asyncio.sleep(0.2)  # the model is busy with `hold`
                with pytest.raises(httpx.ReadTimeout):
                    async with httpx.AsyncClient(base_url=served.url, timeout=0.2) as impatient:
                        await impatient.get("/function/slow", params={"seconds": 0.5})
                assert (await hold).status_code == 200

        asyncio.run(scenario())
        time.sleep(0.3)
        metrics = client.get("/metrics").text
    calls = re.search(r'fnserve_batch_size_count\{function="slow"\} (\S+)', metrics)
    gone = re.search(r'fnserve_requests_total\{function="slow",status="499"\} (\S+)', metrics)
    assert calls is not None and float(calls.group(1)) == 1.0  # the impatient request never ran
    assert gone is not None and float(gone.group(1)) == 1.0

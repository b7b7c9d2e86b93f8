"""Where a single-instance GET's CPU goes inside fnserve, without sockets or Hypercorn.

Drives fnserve's ASGI app (the real Runtime, batcher and recs model) and the protocol-limit app
in-process with ``GET /function/recs?...`` requests, sequentially (concurrency 1) and 64 at a
time, and prints the CPU time per request of each, plus the cyclic garbage collector's pauses.
CPU time, not wall time: other work on the machine barely moves these numbers, so they show
what compare.py's single-instance scenarios cost fnserve beyond HTTP. ``--gc-freeze`` first
moves everything loaded so far (TensorFlow, the models) out of the collector's reach.

    taskset -c 0 .venv/bin/python benchmarks/app_cost.py [--gc-freeze] [--profile 64]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import time
from typing import Any
from urllib.parse import urlencode

import limits
import scenarios as sc

QUERIES = [urlencode(row).encode() for row in sc.recs_rows(64, seed=7)]


async def get(app: Any, query: bytes) -> None:
    """One ASGI GET; ``receive`` then blocks, as a connection that stays open does."""
    sent: list[dict[str, Any]] = []
    body_given = False
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/function/recs",
        "raw_path": b"/function/recs",
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    never.cancel()
    if sent[0]["status"] != 200:
        raise RuntimeError(f"GET answered {sent[0]['status']}: {sent[1:]}")


async def cpu_per_request_us(app: Any, concurrency: int, n: int) -> float:
    for i in range(200):
        await get(app, QUERIES[i % 64])
    started, done = time.process_time(), 0
    while done < n:
        await asyncio.gather(*(get(app, QUERIES[(done + i) % 64]) for i in range(concurrency)))
        done += concurrency
    return (time.process_time() - started) / done * 1e6


class GcPauses:
    """The collector's pauses per generation while installed."""

    def __init__(self) -> None:
        self.count, self.total_s, self.max_s = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        g, took = info["generation"], time.perf_counter() - self._started
        self.count[g] += 1
        self.total_s[g] += took
        self.max_s[g] = max(self.max_s[g], took)

    def __str__(self) -> str:
        return "; ".join(
            f"gen{g}: {self.count[g]} runs, {self.total_s[g] * 1000:.0f} ms in all, "
            f"longest {self.max_s[g] * 1000:.1f} ms"
            for g in range(3)
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once the model is loaded")
    parser.add_argument(
        "--profile", type=int, metavar="CONCURRENCY", help="cProfile (thread CPU time) at this concurrency"
    )
    parser.add_argument("--requests", type=int, default=6400)
    args = parser.parse_args()

    from fnserve.runtime.app import create_app
    from fnserve.runtime.loader import discover
    from fnserve.runtime.service import Runtime
    from fnserve.runtime.settings import Settings

    settings = Settings.load(sc.ROOT, {**os.environ, "FNSERVE_RELOAD_INTERVAL_S": "3600"})
    runtime = Runtime(discover([sc.ROOT / "functions" / "recs"]), settings)
    app = create_app(runtime)
    await runtime.start()
    await runtime.wait_ready()
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
        print(f"gc.freeze(): {gc.get_freeze_count():,} objects out of the collector's reach")
    else:
        print(f"objects the cyclic collector tracks: {len(gc.get_objects()):,}")
    constant = limits.protocol_app()
    pauses = GcPauses()
    for concurrency in (1, 64):
        ours = await cpu_per_request_us(app, concurrency, args.requests)
        bare = await cpu_per_request_us(constant, concurrency, args.requests)
        print(
            f"concurrency {concurrency:>2}: fnserve app {ours:6.0f} us/request, "
            f"constant app {bare:4.0f} us/request"
        )
    print(f"GC pauses: {pauses}")
    if args.profile:
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        await cpu_per_request_us(app, args.profile, args.requests)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main())

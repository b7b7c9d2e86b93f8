"""The queue of asynchronous calls on its own: a scripted runner in place of a function, real stores.

What the guarantee rests on is tested here by value: calls accepted are run and recorded once,
two processes sharing one queue never record a call twice, a run whose runner stopped is taken
over once its lease runs out (and the stalled run, finishing late, is discarded), retried answers,
the attempt limit, pacing, the bound, expiry, and S3's exclusive create.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from fnserve.runtime.asynccalls.lookup import Gone
from fnserve.runtime.asynccalls.metrics import CallMetrics
from fnserve.runtime.asynccalls.queue import CallQueue
from fnserve.runtime.asynccalls.records import CallRequest, Lease, new_id, parse_id
from fnserve.runtime.asynccalls.replay import Answer
from fnserve.runtime.asynccalls.settings import settings_of
from fnserve.runtime.asynccalls.storage import CallStore
from fnserve.runtime.errors import NotFound, Overloaded, StorageUnavailable
from fnserve.runtime.store import CheckpointStore

JSON = (("content-type", "application/json"),)
FAST = {"scan_interval_s": 0.05, "lease_s": 0.3}


class Scripted:
    """A runner whose answers a test decides: doubles ``x``, after ``delay_s``; ``statuses`` are
    answered first, one per run; ``hold`` (an Event) keeps runs waiting until it is set."""

    def __init__(self, *, delay_s: float = 0.0, statuses: list[int] | None = None):
        self.delay_s = delay_s
        self.statuses = collections.deque(statuses or [])
        self.runs: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self.is_ready = True
        self.is_busy = False
        self.hold: asyncio.Event | None = None

    def serves(self, function: str) -> bool:
        return True

    def ready(self, function: str) -> bool:
        return self.is_ready

    def busy(self, function: str, computing: int) -> bool:
        return self.is_busy

    async def run(self, request: CallRequest) -> Answer:
        self.runs.append(request.id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if self.statuses:
            status = self.statuses.popleft()
            return Answer(status, JSON, orjson.dumps({"error": f"scripted {status}"}), 0.0)
        x = orjson.loads(request.body)["x"]
        return Answer(200, (*JSON, ("x-model-version", "3")), orjson.dumps({"predictions": [2 * x]}))


def make_queue(root: str, tmp_path: Path, runner: Scripted, **settings: Any) -> CallQueue:
    values = {**FAST, **settings}
    async_settings = settings_of(values)
    store = CheckpointStore(root, cache_dir=tmp_path / "cache")
    return CallQueue(
        async_settings,
        CallStore(store, async_settings.queue_in(root), "serve"),
        CallMetrics(CollectorRegistry()),
        runner,
    )


def call(x: float, function: str = "double") -> CallRequest:
    now = time.time()
    return CallRequest(
        new_id(function, now), "POST", f"/function/{function}", "", JSON, orjson.dumps({"x": x}), now
    )


async def until(probe: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if isinstance(found, Awaitable):
            found = await found
        if found:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def finished(queue: CallQueue, ids: list[str]) -> bool:
    states = [(await queue.describe(i))["status"] for i in ids]
    return all(s in ("done", "failed") for s in states)


def metric(queue: CallQueue, name: str, **labels: str) -> float:
    found = queue.metrics.registry.get_sample_value(
        f"fnserve_async_{name}_total", {"function": "double", **labels}
    )
    return found or 0.0


def test_accepted_calls_run_once_and_are_recorded(tmp_path: Path) -> None:
    runner = Scripted()

    async def main() -> None:
        queue = make_queue(f"file://{tmp_path}/store", tmp_path, runner)
        await queue.start()
        ids = [(await queue.accept(call(i))).id for i in range(20)]
        await until(lambda: finished(queue, ids))
        docs = [await queue.describe(i) for i in ids]
        await queue.stop()
        assert [d["result"] for d in docs] == [{"predictions": [2 * i]} for i in range(20)]
        assert {d["status"] for d in docs} == {"done"} and {d["version"] for d in docs} == {"3"}
        assert {d["attempts"] for d in docs} == {1}
        assert sorted(runner.runs) == sorted(ids)
        assert metric(queue, "calls_completed") == 20 and metric(queue, "calls_accepted") == 20

    asyncio.run(main())
    folder = tmp_path / "store" / "_async" / "serve" / "double"
    assert len(list((folder / "results").iterdir())) == 20
    assert list((folder / "requests").iterdir()) == [] and list((folder / "leases").iterdir()) == []


def test_two_processes_sharing_a_queue_record_each_call_once(tmp_path: Path) -> None:
    """Two queues on one store (two replicas, or a restart overlapping): each call is claimed by one
    run, and whatever runs, one outcome is recorded per call."""
    first, second = Scripted(delay_s=0.05), Scripted(delay_s=0.05)

    async def main() -> None:
        a = make_queue(f"file://{tmp_path}/store", tmp_path, first)
        b = make_queue(f"file://{tmp_path}/store", tmp_path, second)
        await a.start()
        await b.start()
        first.is_ready = False  # what the first accepts waits, unclaimed, until the second has some
        ids = [(await a.accept(call(i))).id for i in range(60)]
        await until(lambda: len(second.runs) > 0)
        first.is_ready = True
        await until(lambda: finished(a, ids), 20)
        await a.stop()
        await b.stop()
        completed = metric(a, "calls_completed") + metric(b, "calls_completed")
        discarded = metric(a, "calls_discarded") + metric(b, "calls_discarded")
        assert completed == 60
        assert len(first.runs) + len(second.runs) == 60 + discarded
        assert first.runs, "the first process ran none of the calls"
        assert set(first.runs) | set(second.runs) == set(ids)

    asyncio.run(main())
    results = tmp_path / "store" / "_async" / "serve" / "double" / "results"
    assert len(list(results.iterdir())) == 60


def test_a_stalled_run_is_taken_over_after_its_lease_and_discarded_when_it_ends(tmp_path: Path) -> None:
    """A process that stops renewing (killed, hung) loses its runs after lease_s; if it wakes up and
    finishes, its outcome is not recorded: the call ends once."""
    stalled, healthy = Scripted(), Scripted()

    async def main() -> None:
        stalled.hold = asyncio.Event()
        a = make_queue(f"file://{tmp_path}/store", tmp_path, stalled)
        await a.start()
        accepted = await a.accept(call(5))
        await until(lambda: stalled.in_flight == 1)
        a._tasks[1].cancel()  # its lease renewals stop, as a killed process's would
        b = make_queue(f"file://{tmp_path}/store", tmp_path, healthy)
        await b.start()
        await until(lambda: len(healthy.runs) == 1, 5)
        await until(lambda: finished(b, [accepted.id]))
        done = await b.describe(accepted.id)
        stalled.hold.set()  # the first run ends after all
        await until(lambda: metric(a, "calls_discarded") == 1)
        after = await b.describe(accepted.id)
        await a.stop()
        await b.stop()
        assert done["status"] == "done" and done["attempts"] == 2 and done["result"] == {"predictions": [10]}
        assert after == done
        assert metric(a, "calls_completed") == 0 and metric(b, "calls_completed") == 1
        assert metric(b, "calls_retried") == 1

    asyncio.run(main())


def test_overloaded_answers_are_tried_again_then_recorded(tmp_path: Path) -> None:
    runner = Scripted(statuses=[503, 429])

    async def main() -> None:
        queue = make_queue(f"memory://{tmp_path.name}-a", tmp_path, runner)
        await queue.start()
        accepted = await queue.accept(call(2))
        await until(lambda: finished(queue, [accepted.id]))
        doc = await queue.describe(accepted.id)
        await queue.stop()
        assert doc["status"] == "done" and doc["attempts"] == 3 and doc["result"] == {"predictions": [4]}

    asyncio.run(main())


def test_a_call_that_keeps_failing_fails_with_its_last_error(tmp_path: Path) -> None:
    runner = Scripted(statuses=[503, 503, 422])
    gives_up = Scripted(statuses=[503, 503, 503])

    async def main() -> None:
        queue = make_queue(f"memory://{tmp_path.name}-b", tmp_path, runner)
        other = make_queue(f"memory://{tmp_path.name}-c", tmp_path, gives_up, max_attempts=2)
        await queue.start()
        await other.start()
        failing = await queue.accept(call(1))
        exhausted = await other.accept(call(1))
        await until(lambda: finished(queue, [failing.id]))
        await until(lambda: finished(other, [exhausted.id]))
        doc, gave_up = await queue.describe(failing.id), await other.describe(exhausted.id)
        await queue.stop()
        await other.stop()
        assert doc["status"] == "failed" and doc["http_status"] == 422 and doc["attempts"] == 3
        assert doc["error"] == "scripted 422" and doc["result"] == {"error": "scripted 422"}
        assert gave_up["status"] == "failed" and gave_up["http_status"] == 503
        assert gave_up["error"] == "gave up after 2 runs; the last answered 503: scripted 503"
        assert metric(queue, "calls_failed") == 1

    asyncio.run(main())


def test_a_call_whose_runners_keep_dying_fails_without_running_again(tmp_path: Path) -> None:
    runner = Scripted()
    root = f"file://{tmp_path}/store"

    async def main() -> None:
        queue = make_queue(root, tmp_path, runner, max_attempts=2)
        accepted = call(1)
        _, key = parse_id(accepted.id)
        queue.storage.put_request("double", key, accepted)
        for attempt in (1, 2):  # two runs started by processes that died: their leases ran out
            assert queue.storage.claim("double", key, Lease("dead", time.time() - 1, attempt))
        await queue.start()
        await until(lambda: finished(queue, [accepted.id]))
        doc = await queue.describe(accepted.id)
        await queue.stop()
        assert runner.runs == []
        assert doc["status"] == "failed" and doc["attempts"] == 2
        assert doc["error"] == "gave up after 2 runs: the process running it stopped each time"

    asyncio.run(main())


@pytest.mark.parametrize(("busy", "most"), [(True, 1), (False, 4)])
def test_calls_run_one_at_a_time_while_synchronous_work_waits(tmp_path: Path, busy: bool, most: int) -> None:
    runner = Scripted(delay_s=0.03)
    runner.is_busy = busy

    async def main() -> None:
        queue = make_queue(f"memory://{tmp_path.name}-p{busy}", tmp_path, runner, concurrency=4)
        await queue.start()
        ids = [(await queue.accept(call(i))).id for i in range(12)]
        await until(lambda: finished(queue, ids))
        await queue.stop()

    asyncio.run(main())
    assert runner.most_in_flight == most


def test_a_full_queue_refuses_with_429_and_retry_after(tmp_path: Path) -> None:
    runner = Scripted()
    runner.is_ready = False  # the function is still loading: calls wait

    async def main() -> None:
        queue = make_queue(f"memory://{tmp_path.name}-f", tmp_path, runner, max_queued=3)
        await queue.start()
        for i in range(3):
            await queue.accept(call(i))
        with pytest.raises(Overloaded) as refused:
            await queue.accept(call(9))
        waiting = queue.counts("double")
        await queue.stop()
        assert refused.value.status == 429 and int(refused.value.headers["Retry-After"]) >= 1
        assert (
            "queue of 'double' is full (3 calls accepted and not finished, max_queued 3)"
            in refused.value.message
        )
        assert waiting == {"waiting": 3, "running": 0, "elsewhere": 0}
        assert metric(queue, "calls_refused", reason="full") == 1

    asyncio.run(main())


def test_a_store_that_is_down_refuses_the_call_with_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = Scripted()

    async def main() -> None:
        queue = make_queue(f"memory://{tmp_path.name}-d", tmp_path, runner)

        def down(*args: Any) -> None:
            raise StorageUnavailable("storage at memory://... is unavailable: ConnectionError: refused")

        monkeypatch.setattr(queue.storage, "put_request", down)
        await queue.start()
        with pytest.raises(Overloaded) as refused:
            await queue.accept(call(1))
        await queue.stop()
        assert refused.value.status == 503 and "Retry-After" in refused.value.headers
        assert refused.value.message.startswith("the call could not be stored, so it was not accepted")
        assert queue.counts("double")["waiting"] == 0

    asyncio.run(main())


def test_a_restarted_queue_runs_what_the_last_process_accepted(tmp_path: Path) -> None:
    """What a process accepted and never ran is run by the next one (the SIGKILL test does it with
    real processes)."""
    waiting, restarted = Scripted(), Scripted()
    waiting.is_ready = False

    async def main() -> None:
        before = make_queue(f"file://{tmp_path}/store", tmp_path, waiting)
        await before.start()
        ids = [(await before.accept(call(i))).id for i in range(10)]
        after = make_queue(f"file://{tmp_path}/store", tmp_path, restarted)  # `before` is never stopped
        await after.start()
        await until(lambda: finished(after, ids))
        assert sorted(restarted.runs) == sorted(ids)

    asyncio.run(main())


def test_outcomes_expire_410_then_404(tmp_path: Path) -> None:
    runner = Scripted()

    async def main() -> None:
        queue = make_queue(f"file://{tmp_path}/store", tmp_path, runner, result_ttl_s=0.3)
        await queue.start()
        accepted = await queue.accept(call(1))
        await until(lambda: finished(queue, [accepted.id]))
        assert (await queue.describe(accepted.id))["expires_at"] > time.time()
        await asyncio.sleep(0.35)
        with pytest.raises(Gone) as gone:
            await queue.describe(accepted.id)
        _, key = parse_id(accepted.id)
        await until(lambda: queue.storage.is_expired("double", key))  # the sweep left a tombstone
        with pytest.raises(Gone):
            await queue.describe(accepted.id)
        await until(lambda: not queue.storage.is_expired("double", key), 5)
        with pytest.raises(NotFound):
            await queue.describe(accepted.id)
        await queue.stop()
        assert gone.value.status == 410 and "result_ttl_s" in gone.value.message
        assert metric(queue, "calls_expired") == 1

    asyncio.run(main())


def test_s3_claims_and_records_are_exclusive(
    s3_store_root: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    root, options = s3_store_root
    store = CheckpointStore(root, storage_options=options, cache_dir=tmp_path / "cache")
    storage = CallStore(store, f"{root}/_async", "gateway")
    accepted = call(3)
    _, key = parse_id(accepted.id)
    storage.put_request("double", key, accepted)
    assert storage.read_request("double", key) == accepted and storage.requests("double") == [key]
    assert storage.claim("double", key, Lease("a", time.time() + 10, 1))
    assert not storage.claim("double", key, Lease("b", time.time() + 10, 1))
    assert storage.leases("double") == {key: 1} and storage.read_lease("double", key, 1).owner == "a"  # type: ignore[union-attr]
    from fnserve.runtime.asynccalls.records import Outcome

    outcome = Outcome(accepted.id, "done", 200, JSON, b'{"predictions": [6]}', 1.0, 2.0, 3.0, 1)
    assert storage.record("double", key, outcome)
    assert not storage.record(
        "double", key, Outcome(accepted.id, "failed", 500, JSON, b"{}", 1.0, 2.0, 4.0, 2)
    )
    assert storage.read_outcome("double", key) == outcome
    assert set(storage.outcomes("double")) == {key} and storage.functions() == ["double"]

"""Micro-batching: the pure planning without asyncio, the queue and deadlines via ``asyncio.run``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np
import pytest

from fnserve import Tensor
from fnserve.runtime.batcher import Batcher, Job, plan_batch, shape_key
from fnserve.runtime.codec import Rows, to_columns
from fnserve.runtime.errors import ModelError, NotReady, Overloaded, Timeout
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.schema import Schema

T = TypeVar("T")
WAIT_S = 5.0  # generous deadline for things that happen at once; tests poll, never sleep blindly


def scalar_fn(x: float) -> float:
    return 0.0


def ragged_fn(ids: Tensor[np.int64, None], x: float) -> float:
    return 0.0


SCHEMA = Schema.from_function(scalar_fn, has_model=False, where="scalar_fn")
RAGGED = Schema.from_function(ragged_fn, has_model=False, where="ragged_fn")


def job(n: int, key: tuple[Any, ...] = (), *, done: bool = False) -> Job:
    future: Future[Outputs] = Future()  # plan_batch only asks done(): no event loop needed
    if done:
        future.cancel()
    return Job({"x": np.arange(n, dtype=float)}, n, key, future)


# --- pure planning ------------------------------------------------------------------------------


def test_plan_of_an_empty_queue_is_empty() -> None:
    assert plan_batch([], 8) == []


def test_plan_takes_jobs_in_fifo_order_up_to_the_max_size() -> None:
    queue = [job(3), job(3), job(2), job(1)]
    assert plan_batch(queue, 8) == queue[:3]


def test_plan_stops_at_the_first_job_that_does_not_fit_to_keep_fifo() -> None:
    queue = [job(3), job(6), job(1)]
    assert plan_batch(queue, 8) == queue[:1]


def test_plan_always_takes_the_first_job_even_when_it_is_large() -> None:
    queue = [job(10), job(1)]
    assert plan_batch(queue, 8) == queue[:1]


def test_plan_only_joins_jobs_of_the_same_shape_key() -> None:
    queue = [job(1, ("a",)), job(1, ("b",)), job(1, ("a",))]
    assert plan_batch(queue, 8) == [queue[0], queue[2]]


def test_plan_skips_cancelled_jobs_behind_the_first() -> None:
    queue = [job(1), job(1, done=True), job(1)]
    assert plan_batch(queue, 8) == [queue[0], queue[2]]


def test_shape_key_is_empty_without_variable_shapes() -> None:
    assert shape_key(SCHEMA, to_columns(SCHEMA, [{"x": 1.0}])) == ()


def test_shape_key_separates_different_variable_shapes() -> None:
    def key(*lengths: int) -> tuple[Any, ...]:
        return shape_key(RAGGED, to_columns(RAGGED, [{"ids": np.zeros(n), "x": 1.0} for n in lengths]))

    assert key(2) == key(2, 2) == ((2,),)
    assert key(2) != key(3)
    assert key(2, 3) != key(2, 3)  # mixed shapes never share a batch


def test_shape_key_of_unstacked_rows_matches_their_columns() -> None:
    def key(*lengths: int) -> tuple[Any, ...]:
        return shape_key(RAGGED, Rows([{"ids": np.zeros(n), "x": 1.0} for n in lengths]))

    assert key(2) == key(2, 2) == ((2,),) != key(3)
    assert key(2, 3) != key(2, 3)


# --- the queue, with a real event loop ----------------------------------------------------------


class Model:
    """Multiplies by 10; can be held inside a call so that requests pile up behind it."""

    def __init__(self, *, hold: bool = False, fail_on_negative: bool = False):
        self.calls: list[list[float]] = []
        self.inside = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail_on_negative = fail_on_negative

    def __call__(self, columns: dict[str, Any], n: int) -> Outputs:
        self.calls.append(columns["x"].tolist())
        self.inside.set()
        assert self.release.wait(WAIT_S)
        if self.fail_on_negative and (columns["x"] < 0).any():
            raise ModelError("function 'm' failed: ValueError")
        return Outputs.of(columns["x"] * 10, n, "m")


def run(body: Callable[[Batcher, Model], Awaitable[T]], model: Model, **options: Any) -> T:
    async def main() -> T:
        batcher = Batcher(SCHEMA, model, **{"max_batch_size": 64, **options})
        try:
            return await body(batcher, model)
        finally:
            model.release.set()
            await batcher.close()

    return asyncio.run(main())


async def until_inside(model: Model) -> None:
    assert await asyncio.to_thread(model.inside.wait, WAIT_S)


def instances(*xs: float) -> list[dict[str, Any]]:
    return [{"x": x} for x in xs]


async def submit(batcher: Batcher, rows: list[dict[str, Any]], timeout_s: float) -> list[Any]:
    outputs = await batcher.submit(to_columns(SCHEMA, rows), len(rows), timeout_s)
    return outputs.predictions()


def test_concurrent_requests_share_calls_and_each_gets_its_own_answers_in_order() -> None:
    async def body(batcher: Batcher, model: Model) -> list[list[Any]]:
        first = asyncio.ensure_future(submit(batcher, instances(0), WAIT_S))
        await until_inside(model)  # the model is busy: everything below queues up
        rest = [asyncio.ensure_future(submit(batcher, instances(i, i + 0.5), WAIT_S)) for i in range(1, 10)]
        while batcher.queued < 18:
            await asyncio.sleep(0.001)
        model.release.set()
        return await asyncio.gather(first, *rest)

    model = Model(hold=True)
    answers = run(body, model)
    assert answers == [[0.0], *([i * 10.0, i * 10.0 + 5.0] for i in range(1, 10))]
    assert len(model.calls) == 2 < 10
    assert model.calls[1] == [x for i in range(1, 10) for x in (i, i + 0.5)]


def test_a_large_request_is_split_into_batch_sized_calls_and_reassembled() -> None:
    async def body(batcher: Batcher, model: Model) -> list[Any]:
        return await submit(batcher, instances(*range(10)), WAIT_S)

    model = Model()
    assert run(body, model, max_batch_size=4) == [x * 10.0 for x in range(10)]
    assert [len(c) for c in model.calls] == [4, 4, 2]


def test_a_failing_batch_fails_every_waiter_in_it() -> None:
    async def body(batcher: Batcher, model: Model) -> list[Any]:
        first = asyncio.ensure_future(submit(batcher, instances(1), WAIT_S))
        await until_inside(model)
        batch = [asyncio.ensure_future(submit(batcher, instances(x), WAIT_S)) for x in (2, -1, 3)]
        while batcher.queued < 3:
            await asyncio.sleep(0.001)
        model.release.set()
        return await asyncio.gather(first, *batch, return_exceptions=True)

    model = Model(hold=True, fail_on_negative=True)
    first, *batch = run(body, model)
    assert first == [10.0]
    assert all(isinstance(e, ModelError) and "failed" in e.message for e in batch)


def test_an_unexpected_exception_still_answers_every_waiter() -> None:
    def crash(columns: dict[str, Any], n: int) -> Outputs:
        raise KeyError("bug")

    async def main() -> list[Any]:
        batcher = Batcher(SCHEMA, crash, max_batch_size=8)
        try:
            jobs = [submit(batcher, instances(x), WAIT_S) for x in (1, 2)]
            return await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert all(isinstance(e, ModelError) and e.message == "batch failed: KeyError" for e in results)


def test_a_full_queue_is_overloaded_with_retry_after() -> None:
    async def body(batcher: Batcher, model: Model) -> Overloaded:
        first = asyncio.ensure_future(submit(batcher, instances(0), WAIT_S))
        await until_inside(model)
        queued = asyncio.ensure_future(submit(batcher, instances(1, 2), WAIT_S))
        while batcher.queued < 2:
            await asyncio.sleep(0.001)
        with pytest.raises(Overloaded) as info:
            await submit(batcher, instances(3), WAIT_S)
        model.release.set()
        assert await first == [0.0] and await queued == [10.0, 20.0]  # the queued work still completes
        return info.value

    error = run(body, Model(hold=True), max_batch_size=2, max_queue_instances=2)
    assert error.status == 429 and error.headers == {"Retry-After": "1"}


def test_a_deadline_gives_timeout_and_drops_the_queued_work() -> None:
    async def body(batcher: Batcher, model: Model) -> Timeout:
        first = asyncio.ensure_future(submit(batcher, instances(0), WAIT_S))
        await until_inside(model)
        with pytest.raises(Timeout) as info:
            await submit(batcher, instances(1), 0.05)
        model.release.set()
        assert await first == [0.0]
        assert await submit(batcher, instances(2), WAIT_S) == [20.0]
        return info.value

    model = Model(hold=True)
    error = run(body, model)
    assert error.status == 504 and "deadline" in error.message
    assert model.calls == [[0.0], [2.0]]  # the timed-out instance never reached the model


def test_a_deadline_passing_mid_computation_fails_a_split_request_and_drops_its_other_parts() -> None:
    async def body(batcher: Batcher, model: Model) -> Timeout:
        with pytest.raises(Timeout) as info:
            await submit(batcher, instances(1, 2, 3), 0.05)  # three jobs of one row; the first held
        model.release.set()
        assert await submit(batcher, instances(4), WAIT_S) == [40.0]
        return info.value

    model = Model(hold=True)
    error = run(body, model, max_batch_size=1)
    assert error.status == 504 and "0.05s" in error.message
    assert model.calls == [[1.0], [4.0]]  # the two parts still queued never reached the model


def test_a_lone_request_is_not_delayed() -> None:
    async def body(batcher: Batcher, model: Model) -> float:
        started = time.perf_counter()
        assert await submit(batcher, instances(4), WAIT_S) == [40.0]
        return time.perf_counter() - started

    model = Model()
    elapsed = run(body, model, max_batch_size=256)
    assert model.calls == [[4.0]]  # called at once with just that instance, not after waiting for company
    assert elapsed < 0.5


def test_a_request_larger_than_the_queue_bound_is_admitted_into_an_empty_queue() -> None:
    async def body(batcher: Batcher, model: Model) -> list[Any]:
        return await submit(batcher, instances(*range(10)), WAIT_S)

    model = Model()
    assert run(body, model, max_batch_size=2, max_queue_instances=4) == [x * 10.0 for x in range(10)]
    assert len(model.calls) == 5


def test_a_latency_target_caps_the_batch_by_the_measured_cost() -> None:
    class Costly(Model):
        """1 ms per call plus 1 ms per instance."""

        def __call__(self, columns: dict[str, Any], n: int) -> Outputs:
            time.sleep(0.001 + 0.001 * n)
            return super().__call__(columns, n)

    async def body(batcher: Batcher, model: Model) -> list[int]:
        for _ in range(4):  # teach the cost model: batches of 1 and 8
            await submit(batcher, instances(1), WAIT_S)
            await asyncio.gather(*(submit(batcher, instances(1), WAIT_S) for _ in range(8)))
        model.calls.clear()
        model.release.clear()
        first = asyncio.ensure_future(submit(batcher, instances(0), WAIT_S))
        await until_inside(model)
        rest = [asyncio.ensure_future(submit(batcher, instances(i), WAIT_S)) for i in range(60)]
        while batcher.queued < 60:
            await asyncio.sleep(0.001)
        model.release.set()
        await asyncio.gather(first, *rest)
        return [len(call) for call in model.calls]

    sizes = run(body, Costly(), max_batch_size=64, latency_target_s=0.025)
    assert sum(sizes) == 61
    assert max(sizes[1:]) <= 25  # ~1 ms + 1 ms/instance within 25 ms: never the 60 a plain batcher takes
    assert len(sizes) >= 4


def test_model_calls_in_flight_never_exceed_max_concurrency() -> None:
    class Counting(Model):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()
            self.now = self.peak = 0

        def __call__(self, columns: dict[str, Any], n: int) -> Outputs:
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(0.005)  # long enough for the other requests to find every slot busy
            with self.lock:
                self.now -= 1
            return super().__call__(columns, n)

    async def body(batcher: Batcher, model: Model) -> list[list[Any]]:
        return await asyncio.gather(*(submit(batcher, instances(i), WAIT_S) for i in range(40)))

    for slots in (1, 2):
        model = Counting()
        answers = run(body, model, max_batch_size=4, max_concurrency=slots)
        assert answers == [[i * 10.0] for i in range(40)]
        assert model.peak == slots


def test_closing_answers_queued_waiters_and_refuses_new_work() -> None:
    async def body(batcher: Batcher, model: Model) -> list[Any]:
        first = asyncio.ensure_future(submit(batcher, instances(0), WAIT_S))
        await until_inside(model)
        queued = asyncio.ensure_future(submit(batcher, instances(1), WAIT_S))
        while batcher.queued < 1:
            await asyncio.sleep(0.001)
        await batcher.close()
        model.release.set()
        late = await asyncio.gather(submit(batcher, instances(2), WAIT_S), return_exceptions=True)
        return [await first, *await asyncio.gather(queued, return_exceptions=True), *late]

    first, queued, late = run(body, Model(hold=True))
    assert first == [0.0]  # the call already running still answers
    assert isinstance(queued, NotReady) and "shutting down" in queued.message  # 503: retry elsewhere
    assert isinstance(late, NotReady) and "shutting down" in late.message


# --- a lone request on the loop's own turn --------------------------------------------------------


class ThreadNoting(Model):
    """A Model that also notes which thread ran each call."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, columns: dict[str, Any], n: int) -> Outputs:
        self.threads.append(threading.get_ident())
        return super().__call__(columns, n)


def test_a_lone_short_call_runs_on_the_loop_once_its_cost_is_known() -> None:
    inlined: list[int] = []

    async def body(batcher: Batcher, model: Model) -> tuple[list[Any], int]:
        answers = [await submit(batcher, instances(i), WAIT_S) for i in range(6)]
        return answers, threading.get_ident()

    model = ThreadNoting()
    answers, loop_thread = run(body, model, inline_max_s=0.5, on_inline=lambda: inlined.append(1))
    assert answers == [[i * 10.0] for i in range(6)]
    assert all(t != loop_thread for t in model.threads[:3])  # the cost is measured in the thread first
    assert model.threads[3:] == [loop_thread] * 3 and len(inlined) == 3


@pytest.mark.parametrize(
    "options",
    [
        {"inline_max_s": 0.0},  # off
        {"inline_max_s": 0.5, "alone": lambda: False},  # another request is in the server
        {"inline_max_s": 1e-9},  # the call is not short enough
    ],
    ids=["off", "not-alone", "too-slow"],
)
def test_a_call_that_is_not_lone_and_short_goes_to_the_model_thread(options: dict[str, Any]) -> None:
    async def body(batcher: Batcher, model: Model) -> int:
        for i in range(6):
            await submit(batcher, instances(i), WAIT_S)
        return threading.get_ident()

    model = ThreadNoting()
    loop_thread = run(body, model, **options)
    assert len(model.threads) == 6 and loop_thread not in model.threads


def test_a_request_with_others_in_the_server_is_queued_without_waiting_a_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    turns = []
    sleep = asyncio.sleep

    async def counted(delay: float, result: Any = None) -> Any:
        turns.append(delay)
        return await sleep(delay, result)

    alone = [True]

    async def body(batcher: Batcher, model: Model) -> None:
        for i in range(4):  # a known, short cost
            await submit(batcher, instances(i), WAIT_S)
        monkeypatch.setattr(asyncio, "sleep", counted)
        await submit(batcher, instances(4), WAIT_S)  # alone: one turn, then on the loop
        alone[0] = False
        await submit(batcher, instances(5), WAIT_S)  # others are in: straight to the queue

    run(body, Model(), inline_max_s=0.5, alone=lambda: alone[0])
    assert turns == [0]


def test_concurrent_requests_still_share_calls_with_the_lone_path_on() -> None:
    in_server = [0]

    async def one(batcher: Batcher, i: int) -> list[Any]:
        in_server[0] += 1  # as the app counts a request from its arrival
        try:
            return await submit(batcher, instances(i), WAIT_S)
        finally:
            in_server[0] -= 1

    async def body(batcher: Batcher, model: Model) -> list[list[Any]]:
        for i in range(4):  # a known, short cost
            await one(batcher, i)
        return await asyncio.gather(*(one(batcher, i) for i in range(32)))

    model = Model()
    answers = run(body, model, inline_max_s=0.5, alone=lambda: in_server[0] <= 1)
    assert answers == [[i * 10.0] for i in range(32)]
    assert len(model.calls) - 4 < 8  # 32 concurrent requests in a few calls, not one each

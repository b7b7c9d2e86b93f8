"""Adaptive micro-batching: concurrent requests to one function become one model call.

Requests queue as jobs (columns + row count). Whenever a model-call slot is free, every queued
job that fits runs in one call in a worker thread, and the loop then answers
each job with its own slice. There is no fixed batch window:

* a lone request is never held back: an idle model runs it at once, so at low traffic the
  latency is the model's own. When it is truly alone (no other request is in the server and
  nothing is queued, before and after one turn of the loop; a request with others in the server
  goes to the queue without that turn) and the model's measured call for its rows
  is short (``inline_max_s``, 1 ms by default), it runs on the event loop's own turn: no hand-off
  to the model thread and back, which would cost more than such a call saves the loop. Under
  concurrency the others are in the server, so batching is exactly as before;
* under load, requests gather while the model is busy, so the batch grows with the traffic
  and the cost of each call is shared — the busier, the larger the batches;
* the model's measured cost (``CostModel``: a fixed part plus a per-instance part, fitted on
  recent calls) caps the batch under an optional latency target and tells the admission
  check how long the queue will take to drain.

The queue is bounded: a request that would overflow it, or that would wait past its deadline
by the measured cost, is refused at once with 429 and a ``Retry-After`` — backpressure, not
collapse. Stacking and splitting are pure (``plan_batch``, ``codec.stack_parts``,
``Outputs.slice``) and tested without asyncio; this module owns queues, futures, deadlines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fnserve.runtime.codec import Inputs, Rows, slice_columns, stack_parts
from fnserve.runtime.costmodel import CostModel
from fnserve.runtime.errors import FnError, ModelError, NotReady, Overloaded, Timeout
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.schema import InputField, Schema


@dataclass(eq=False)
class Job:
    columns: Inputs
    n: int
    key: tuple[Any, ...]  # shapes of variable-shape inputs: only equal keys share a batch
    future: asyncio.Future[Outputs] | Any
    enqueued: float = field(default_factory=time.perf_counter)


def variable_shape(f: InputField) -> bool:
    """A tensor or image input whose instances may differ in shape."""
    return f.kind in ("tensor", "image") and None in f.shape


def shape_key(schema: Schema, columns: Inputs) -> tuple[Any, ...]:
    """Jobs whose tensors/images differ in shape must not be stacked together."""
    key = []
    for f in schema.inputs:
        if not variable_shape(f):
            continue
        column = [row[f.name] for row in columns] if isinstance(columns, Rows) else columns[f.name]
        if isinstance(column, np.ndarray):
            key.append(column.shape[1:])
        else:
            shapes = {np.shape(v) for v in column}
            key.append(shapes.pop() if len(shapes) == 1 else object())  # mixed: a batch of its own
    return tuple(key)


def plan_batch(queue: Sequence[Job], limit: int) -> list[Job]:
    """Which queued jobs go into the next call: FIFO, same shape key, at most ``limit`` rows."""
    if not queue:
        return []
    first = queue[0]
    batch, size = [first], first.n
    for job in list(queue)[1:]:
        if size + job.n > limit:
            break
        if job.key == first.key and not job.future.done():
            batch.append(job)
            size += job.n
    return batch


class Batcher:
    """The queue and model slots of one function. ``call(columns, n)`` runs in a worker thread.

    There is no worker task: a job is dispatched when it is queued (if a slot is free) and
    queued jobs are dispatched when a call finishes (the thread posts its result back to the
    loop). A lone request therefore costs one hand-off to the model thread and one back.
    """

    def __init__(
        self,
        schema: Schema,
        call: Callable[[dict[str, Any], int], Outputs],
        *,
        max_batch_size: int,
        max_concurrency: int = 1,
        max_queue_instances: int = 4096,
        latency_target_s: float | None = None,
        executor: ThreadPoolExecutor | None = None,
        inline_max_s: float = 0.0,
        alone: Callable[[], bool] | None = None,
        on_inline: Callable[[], None] | None = None,
    ):
        """``inline_max_s``: a lone request whose call is predicted this short runs on the loop
        (0: never); ``alone``: whether the request asking is the only one in the server;
        ``on_inline``: told of each such call (a metric)."""
        self.schema = schema
        # Only variable-shape inputs make a job's shape key; most functions have none.
        self._ragged = any(variable_shape(f) for f in schema.inputs)
        self._call = call
        self.max_batch_size = max_batch_size
        self.max_queue_instances = max(max_queue_instances, max_batch_size)
        self.latency_target_s = latency_target_s
        self.cost = CostModel()
        self._queue: collections.deque[Job] = collections.deque()
        self._queued = 0
        self._free_slots = max_concurrency
        self._max_concurrency = max_concurrency
        self._executor = executor or ThreadPoolExecutor(max_concurrency, thread_name_prefix="fnserve-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.in_flight = 0  # instances being computed right now
        self.batches = 0
        self.batched_instances = 0
        self.inline_max_s = inline_max_s
        self._alone = alone or (lambda: True)
        self._on_inline = on_inline or (lambda: None)

    @property
    def queued(self) -> int:
        return self._queued

    def drain_estimate_s(self, extra: int = 0) -> float:
        """How long the work queued now (plus ``extra`` rows) takes, by the measured cost."""
        rows = self._queued + self.in_flight + extra
        full_batches = rows / self.max_batch_size
        return (
            self.cost.predict(min(rows, self.max_batch_size)) * max(1.0, full_batches) / self._max_concurrency
        )

    def admit(self, n: int, timeout_s: float) -> None:
        """Refuse now (429) what the queue cannot hold or could not finish before the deadline."""
        if self._queued == 0:
            return  # an idle queue admits any request, however large (the app allows 10,000 rows)
        if self._queued + n > self.max_queue_instances:
            raise Overloaded(
                f"queue is full ({self._queued} instances waiting); retry later",
                status=429,
                retry_after_s=self._retry_after_s(),
            )
        if self.cost.known and (wait_s := self.drain_estimate_s(n)) > timeout_s:
            raise Overloaded(
                f"overloaded: the queue needs ~{wait_s:.1f}s, past this function's {timeout_s:g}s deadline",
                status=429,
                retry_after_s=self._retry_after_s(),
            )

    def _retry_after_s(self) -> int:
        """A refused caller's ``Retry-After``: the queue's drain time, in whole seconds."""
        return max(1, math.ceil(self.drain_estimate_s()))

    async def submit(self, columns: Inputs, n: int, timeout_s: float) -> Outputs:
        """Outputs for ``n`` rows of ``columns``, in order. Large requests are split into batch-sized jobs."""
        if self._closed:
            raise NotReady("the function is shutting down; retry on another replica")
        self.admit(n, timeout_s)
        loop = self._loop = asyncio.get_running_loop()
        if self._may_inline(n) and self._alone():  # others in the server already: not alone, no turn
            await asyncio.sleep(0)  # requests that arrived with this one reach the server first
            if self._may_inline(n) and self._alone():
                return self._call_inline(columns, n)
        jobs = []
        for start in range(0, n, self.max_batch_size):
            stop = min(n, start + self.max_batch_size)
            part = columns if (start, stop) == (0, n) else slice_columns(columns, start, stop)
            key = shape_key(self.schema, part) if self._ragged else ()
            jobs.append(Job(part, stop - start, key, loop.create_future()))
        self._queue.extend(jobs)
        self._queued += n
        self._dispatch()
        # The deadline is one timer that fails the jobs' futures: a third of what asyncio.timeout
        # costs a request (its context manager, its rescheduling, the task's cancel bookkeeping).
        deadline = loop.call_later(timeout_s, _expire, jobs, timeout_s)
        try:
            if len(jobs) == 1:
                return await jobs[0].future
            return Outputs.concat(await asyncio.gather(*(j.future for j in jobs)))
        finally:
            deadline.cancel()
            for job in jobs:  # a timed-out, cancelled or disconnected request drops its queued work
                if not job.future.done():
                    job.future.cancel()

    def _may_inline(self, n: int) -> bool:
        """Idle, and the call for ``n`` rows is known to be short."""
        return (
            self.inline_max_s > 0
            and not self._queue
            and self._free_slots == self._max_concurrency
            and not self._closed
            and self.cost.known
            and self.cost.predict(n) <= self.inline_max_s
        )

    def _call_inline(self, columns: Inputs, n: int) -> Outputs:
        """One lone request's call, here on the loop; it holds a model slot, as a batch does."""
        self._free_slots -= 1
        self.in_flight += n
        try:
            stacked = stack_parts(self.schema, [columns])
            started = time.perf_counter()
            outputs = self._call(stacked, n)
            self.cost.observe(n, time.perf_counter() - started)
        except FnError:
            raise
        except Exception as exc:  # a bug in the runtime itself, as in _run_batch
            raise ModelError(f"batch failed: {type(exc).__name__}") from exc
        finally:
            self.in_flight -= n
            self._free_slots += 1
            self._dispatch()  # what arrived meanwhile (nothing could: the loop was here)
        self.batches += 1
        self.batched_instances += n
        self._on_inline()
        return outputs

    def batch_limit(self, now: float) -> int:
        """Largest batch for the next call: the max size, capped to meet the latency target."""
        if self.latency_target_s is None or not self._queue or not self.cost.known:
            return self.max_batch_size
        budget = self.latency_target_s - (now - self._queue[0].enqueued)
        return max(1, min(self.max_batch_size, self.cost.largest_within(budget)))

    def _dispatch(self) -> None:
        """Start a model call for the queued jobs on every free slot (on the event loop)."""
        while self._free_slots > 0 and not self._closed:
            batch = self._next_batch()
            if not batch:
                return
            n = sum(job.n for job in batch)
            self._free_slots -= 1
            self.in_flight += n
            self._executor.submit(self._run_batch, batch, n)

    def _next_batch(self) -> list[Job]:
        while self._queue and self._queue[0].future.done():  # cancelled while queued
            self._queued -= self._queue.popleft().n
        batch = plan_batch(self._queue, self.batch_limit(time.perf_counter()))
        if len(batch) == len(self._queue):
            self._queue.clear()
        else:
            for job in batch:
                self._queue.remove(job)
        self._queued -= sum(job.n for job in batch)
        return batch

    def _run_batch(self, batch: list[Job], n: int) -> None:
        """In the model thread: stack, call, and post the outcome back to the loop."""
        outputs: Outputs | None = None
        error: FnError | None = None
        try:
            columns = stack_parts(self.schema, [job.columns for job in batch])
            started = time.perf_counter()
            outputs = self._call(columns, n)
            self.cost.observe(n, time.perf_counter() - started)
        except FnError as exc:
            error = exc
        except Exception as exc:  # a bug in the runtime itself; still never leave a waiter hanging
            error = ModelError(f"batch failed: {type(exc).__name__}")
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
            self._loop.call_soon_threadsafe(self._finished, batch, n, outputs, error)

    def _finished(self, batch: list[Job], n: int, outputs: Outputs | None, error: FnError | None) -> None:
        """On the loop: answer every job of the batch, free the slot, start what queued meanwhile."""
        self.in_flight -= n
        self._free_slots += 1
        try:
            if outputs is None:
                raise error or ModelError("batch failed")
            offset = 0
            for job in batch:
                _settle(job, result=outputs.slice(offset, offset + job.n))
                offset += job.n
            self.batches += 1
            self.batched_instances += n
        except Exception as exc:  # a failed batch fails every waiter in it, loudly
            failure = exc if isinstance(exc, FnError) else ModelError(f"batch failed: {type(exc).__name__}")
            for job in batch:
                _settle(job, exc=failure)
        finally:
            self._dispatch()

    async def close(self) -> None:
        self._closed = True
        for job in self._queue:
            _settle(job, exc=NotReady("the function is shutting down; retry on another replica"))
        self._queue.clear()
        self._queued = 0
        self._executor.shutdown(wait=False)  # a call already started still answers its waiters


def _expire(jobs: list[Job], timeout_s: float) -> None:
    """The deadline passed: the request's unanswered jobs fail (``submit`` drops them)."""
    for job in jobs:
        _settle(job, exc=Timeout(f"no answer within the deadline of {timeout_s:g}s"))


def _settle(job: Job, *, result: Outputs | None = None, exc: BaseException | None = None) -> None:
    if job.future.done():
        return
    if exc is not None:
        job.future.set_exception(exc)
    elif result is not None:
        job.future.set_result(result)

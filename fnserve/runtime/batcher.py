"""Micro-batching: concurrent requests to one function become one model call.

Requests queue as jobs. Whenever a model-call slot is free, the worker takes every queued
job that fits (up to ``max_batch_size`` instances, same variable shapes) and runs them as
one call in a worker thread, then answers each job with its own slice. A lone request is
never held back: a batch only grows while the model is busy, so the batch size follows the
traffic by itself. The queue is bounded; a full queue is an immediate 503 with Retry-After.

The stacking and splitting is pure (``plan_batch``, ``codec.to_columns``) and tested without
asyncio; this module only owns queues, futures and deadlines.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fnserve.runtime.codec import to_columns
from fnserve.runtime.errors import FnError, ModelError, Overloaded, Timeout
from fnserve.runtime.schema import Schema

Instances = Sequence[Mapping[str, Any]]


@dataclass(eq=False)
class Job:
    instances: Instances
    key: tuple[Any, ...]  # shapes of variable-shape inputs: only equal keys share a batch
    future: asyncio.Future[list[Any]]
    enqueued: float = field(default_factory=time.perf_counter)


def shape_key(schema: Schema, instances: Instances) -> tuple[Any, ...]:
    """Jobs whose tensors/images differ in shape must not be stacked together."""
    variable = [f.name for f in schema.inputs if f.kind in ("tensor", "image") and None in f.shape]
    if not variable:
        return ()
    shapes = {tuple(getattr(inst[name], "shape", ()) for name in variable) for inst in instances}
    return tuple(shapes) if len(shapes) == 1 else (object(),)  # mixed shapes: a batch of its own


def plan_batch(queue: Sequence[Job], max_batch_size: int) -> list[Job]:
    """Which queued jobs go into the next call: FIFO, same shape key, within the size limit."""
    if not queue:
        return []
    first = queue[0]
    batch, size = [first], len(first.instances)
    for job in list(queue)[1:]:
        if size + len(job.instances) > max_batch_size:
            break
        if job.key == first.key and not job.future.done():
            batch.append(job)
            size += len(job.instances)
    return batch


class Batcher:
    """The queue and worker of one function. ``call(columns, n)`` runs in a thread."""

    def __init__(
        self,
        schema: Schema,
        call: Callable[[dict[str, Any], int], list[Any]],
        *,
        max_batch_size: int,
        max_concurrency: int = 1,
        max_queue_instances: int = 4096,
        executor: ThreadPoolExecutor | None = None,
    ):
        self.schema = schema
        self._call = call
        self.max_batch_size = max_batch_size
        self.max_queue_instances = max(max_queue_instances, max_batch_size)
        self._queue: collections.deque[Job] = collections.deque()
        self._queued_instances = 0
        self._slots = asyncio.Semaphore(max_concurrency)
        self._wakeup = asyncio.Event()
        self._executor = executor or ThreadPoolExecutor(max_concurrency, thread_name_prefix="fnserve-model")
        self._worker: asyncio.Task[None] | None = None
        self.in_flight = 0  # instances being computed right now
        self.batches = 0
        self.batched_instances = 0

    @property
    def queued(self) -> int:
        return self._queued_instances

    async def submit(self, instances: Instances, timeout_s: float) -> list[Any]:
        """Predictions for ``instances``, in order. Large requests are split into batch-sized jobs."""
        self._ensure_worker()
        # An empty queue admits any request, however large: otherwise a request bigger than the
        # bound (the app allows 10,000 instances) could never succeed, not even on an idle server.
        if self._queued_instances and self._queued_instances + len(instances) > self.max_queue_instances:
            raise Overloaded(f"queue is full ({self._queued_instances} instances waiting); retry later")
        loop = asyncio.get_running_loop()
        step = self.max_batch_size
        jobs = []
        for start in range(0, len(instances), step):
            chunk = instances[start : start + step]
            jobs.append(Job(chunk, shape_key(self.schema, chunk), loop.create_future()))
        for job in jobs:
            self._queue.append(job)
            self._queued_instances += len(job.instances)
        self._wakeup.set()
        try:
            results = await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), timeout_s)
        except TimeoutError:
            raise Timeout(f"no answer within the deadline of {timeout_s:g}s") from None
        finally:
            for job in jobs:  # a timed-out or cancelled request drops its queued work
                if not job.future.done():
                    job.future.cancel()
        return [prediction for chunk in results for prediction in chunk]

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="fnserve-batcher")

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            batch = self._next_batch()
            while not batch:
                self._wakeup.clear()
                await self._wakeup.wait()
                batch = self._next_batch()
            asyncio.get_running_loop().create_task(self._execute(batch))

    def _next_batch(self) -> list[Job]:
        while self._queue and self._queue[0].future.done():  # cancelled while queued
            self._queued_instances -= len(self._queue.popleft().instances)
        batch = plan_batch(self._queue, self.max_batch_size)
        for job in batch:
            self._queue.remove(job)
            self._queued_instances -= len(job.instances)
        return batch

    async def _execute(self, batch: list[Job]) -> None:
        instances = [inst for job in batch for inst in job.instances]
        self.in_flight += len(instances)
        try:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._executor, self._stack_and_call, instances)
        except FnError as exc:
            for job in batch:  # a failed batch fails every waiter in it, loudly
                _settle(job, exc=exc)
        except Exception as exc:  # a bug in the runtime itself; still never leave a waiter hanging
            for job in batch:
                _settle(job, exc=ModelError(f"batch failed: {type(exc).__name__}"))
        else:
            offset = 0
            for job in batch:
                _settle(job, result=results[offset : offset + len(job.instances)])
                offset += len(job.instances)
            self.batches += 1
            self.batched_instances += len(instances)
        finally:
            self.in_flight -= len(instances)
            self._slots.release()

    def _stack_and_call(self, instances: Instances) -> list[Any]:
        return self._call(to_columns(self.schema, instances), len(instances))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(job: Job, *, result: list[Any] | None = None, exc: BaseException | None = None) -> None:
    if job.future.done():
        return
    if exc is not None:
        job.future.set_exception(exc)
    else:
        job.future.set_result(result or [])

"""The queue of asynchronous calls of one process: accept, claim, run, record (:mod:`.recovery`
reads back what others left and expires old outcomes; :mod:`.lookup` finds a call's status).

    queue = CallQueue(settings, CallStore(store, settings.queue_in(store.root), "serve"), metrics, runner)
    await queue.start()                  # reads what earlier processes left, starts the workers
    call = await queue.accept(request)   # durably stored when it returns: then answer 202
    await queue.describe(call.id)        # pending / running / done / failed, and the result

The guarantee — **at-least-once runs, exactly-once outcome**:

* accepted means stored: ``accept`` returns only after a durable write, so a SIGKILL a moment
  after the 202 loses nothing; a restarted process reads the queue back before it works;
* a run starts with a **lease**: an exclusive create of ``leases/{key}.{n}`` for run number ``n``,
  renewed every ``lease_s / 3`` while it runs. Two runners cannot hold the same run. A lease not
  renewed for ``lease_s`` (its process was killed, or hangs) lets any process start run ``n + 1``;
  a process that stops cleanly gives its leases back so the next one need not wait;
* the outcome is recorded with an **exclusive create** of ``results/{key}``: the first run to finish
  wins, a later one (a process that hung past its lease, then woke up) is discarded and counted
  (``calls_discarded``). Only after that is the request removed, and a crash in between is
  cleaned up by the next scan.

So a call may *run* twice (its runner died mid-way, or stalled past its lease), never more than
``max_attempts`` times, and its outcome is recorded, reported and called back for exactly one run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import orjson

from fnserve.runtime.asynccalls import lookup
from fnserve.runtime.asynccalls.callbacks import Callbacks
from fnserve.runtime.asynccalls.known import KnownCalls, Run
from fnserve.runtime.asynccalls.metrics import CallMetrics
from fnserve.runtime.asynccalls.pacing import may_start, queue_retry_after_s, retry_wait_s
from fnserve.runtime.asynccalls.records import CallRequest, Lease, Outcome, outcome_status, parse_id
from fnserve.runtime.asynccalls.recovery import Recovery
from fnserve.runtime.asynccalls.replay import Answer
from fnserve.runtime.asynccalls.settings import AsyncSettings
from fnserve.runtime.asynccalls.status import document
from fnserve.runtime.asynccalls.storage import CallStore
from fnserve.runtime.errors import FnError, NotReady, Overloaded, StorageUnavailable
from fnserve.runtime.redact import scrub

log = logging.getLogger("fnserve.async")
T = TypeVar("T")

STORE_THREADS = 8  # blocking store calls in flight: a burst of accepts is written in parallel
BUSY_POLL_S = 0.005  # how often a run held back by synchronous work looks again
IDLE_POLL_S = 0.25  # how often a worker waiting for its function to be ready looks again
PIPELINE = 2  # runs of one function under way per run it may compute at once: the others claim,
#   read or record meanwhile (few: a run claimed is one a killed process leaves to its lease)
RATE_WINDOW_S = 60.0  # completions counted for the rate behind a full queue's Retry-After


class Runner(Protocol):
    """What the part serving the calls (runtime, gateway) gives the queue."""

    def serves(self, function: str) -> bool:
        """Whether this process runs calls of ``function`` (the runtime: functions it serves)."""

    def ready(self, function: str) -> bool:
        """Whether calls of ``function`` may start now (its model is loaded; not draining)."""

    def busy(self, function: str, computing: int) -> bool:
        """Whether synchronous work of ``function`` is waiting, while ``computing`` of its
        asynchronous calls are being computed (then they are computed one at a time)."""

    async def run(self, request: CallRequest) -> Answer:
        """The answer the synchronous call would have had."""


class CallQueue:
    def __init__(
        self,
        settings: AsyncSettings,
        storage: CallStore,
        metrics: CallMetrics,
        runner: Runner,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.storage = storage
        self.metrics = metrics
        self.runner = runner
        self.clock = clock
        self.owner = secrets.token_hex(8)  # this process, in the leases it writes
        self.callbacks = Callbacks(settings, metrics, self._callback_ended)
        self.recovery = Recovery(self)
        self.functions: dict[str, KnownCalls] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._completions: collections.deque[float] = collections.deque()
        self._stopping = False
        self.started = False

    # --- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read what earlier processes left (calls waiting, runs to take over, callbacks owed), then
        work. A store that is down does not stop the start: the next scan tries again."""
        self._pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="fnserve-async-store")
        loop = asyncio.get_running_loop()
        with contextlib.suppress(StorageUnavailable):
            await self.recovery.scan(full=True)
        self._tasks = [
            loop.create_task(self.recovery.loop(), name="async-scan"),
            loop.create_task(self._renew_loop(), name="async-leases"),
        ]
        self.started = True

    async def stop(self, drain_s: float = 5.0) -> None:
        """Start nothing more; let runs finish for up to ``drain_s``, then give back the leases of
        those still going (so the next process takes them over at once, not after ``lease_s``)."""
        self._stopping = True
        for function in self.functions.values():
            function.wake.set()
        deadline = time.monotonic() + drain_s
        while any(f.running for f in self.functions.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        tasks = [*self._tasks, *(f.worker for f in self.functions.values() if f.worker)]
        cut = [(f, key, run) for f in self.functions.values() for key, run in list(f.running.items())]
        tasks += [run.task for _, _, run in cut if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for function, key, run in (c for c in cut if c[2].claimed):
            released = Lease(self.owner, 0.0, run.lease.attempt)
            with contextlib.suppress(FnError):
                await self.io(self.storage.renew, function.name, key, released)
        await self.callbacks.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # --- accepting ----------------------------------------------------------------------------

    async def accept(self, request: CallRequest) -> CallRequest:
        """Store ``request`` durably and queue it; 429 past ``max_queued``, 503 if the store is down."""
        name, key = parse_id(request.id)
        function = self.known(name)
        if function.size >= self.settings.max_queued:
            self.metrics.refused.labels(name, "full").inc()
            retry_s = queue_retry_after_s(function.size, self._completed_per_s())
            raise Overloaded(
                f"the queue of {name!r} is full ({function.size} calls accepted and not finished, "
                f"max_queued {self.settings.max_queued}); retry later",
                status=429,
                retry_after_s=retry_s,
            )
        function.reserved += 1
        try:
            await self.io(self.storage.put_request, name, key, request)
        except StorageUnavailable as exc:
            self.metrics.refused.labels(name, "storage").inc()
            raise Overloaded(f"the call could not be stored, so it was not accepted: {exc.message}") from None
        finally:
            function.reserved -= 1
        function.add(key, 0)
        self.metrics.accepted.labels(name).inc()
        self.count(function)
        return request

    # --- status -------------------------------------------------------------------------------

    async def describe(self, call_id: str) -> dict[str, Any]:
        """The status document of a call: 404 for an unknown id, 410 past its outcome's time."""
        return await lookup.describe(self, call_id)

    async def outcome(self, call_id: str) -> Outcome | dict[str, Any]:
        """A finished call's outcome, or the status document of one still pending or running."""
        return (await lookup.find(self, call_id))[0]

    # --- working ------------------------------------------------------------------------------

    def known(self, name: str) -> KnownCalls:
        function = self.functions.get(name)
        if function is None:
            function = self.functions[name] = KnownCalls(
                name, slots=asyncio.Semaphore(self.settings.concurrency)
            )
            function.worker = asyncio.get_running_loop().create_task(
                self._work(function), name=f"async-{name}"
            )
        return function

    async def _work(self, function: KnownCalls) -> None:
        """Start the function's waiting calls, oldest first. Up to ``PIPELINE x concurrency`` runs
        of a function are under way at once (claiming, reading, recording: store work, in
        threads); how many of them it computes at a time is paced apart (:meth:`_turn`)."""
        name, settings = function.name, self.settings
        pipeline = PIPELINE * settings.concurrency
        while not self._stopping:
            if not function.waiting or len(function.running) >= pipeline:
                function.wake.clear()
                await function.wake.wait()
                continue
            if not self.runner.ready(name):
                function.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL_S):
                        await function.wake.wait()
                continue
            taken = function.next()
            if taken is None:
                continue
            key, runs = taken
            run = Run(Lease(self.owner, self.clock() + settings.lease_s, runs + 1), self.clock())
            function.running[key] = run
            run.task = asyncio.get_running_loop().create_task(self._run(function, key, run))
            self.count(function)

    @contextlib.asynccontextmanager
    async def _turn(self, function: KnownCalls) -> AsyncIterator[None]:
        """Wait until the function may compute one more of its calls (see :mod:`.pacing`): up to
        ``concurrency`` at once (a semaphore: the first to ask goes first, and only those it lets
        through look again); one at a time, with pauses, while synchronous work waits."""
        name, settings = function.name, self.settings
        async with function.slots:
            while not (
                self.runner.ready(name)
                and may_start(
                    running=function.computing,
                    concurrency=settings.concurrency,
                    busy=self.runner.busy(name, function.computing),
                    idle_s=time.monotonic() - function.last_end,
                    turn_s=function.turn_s,
                )
            ):  # neither the end of synchronous work nor readiness is signalled: look again soon
                await asyncio.sleep(BUSY_POLL_S if self.runner.ready(name) else IDLE_POLL_S)
            function.computing += 1
            started = time.monotonic()
            try:
                yield
            finally:
                function.computing -= 1
                function.last_end = time.monotonic()
                function.turn_s += (function.last_end - started - function.turn_s) * 0.2  # recent average

    async def _run(self, function: KnownCalls, key: str, run: Run) -> None:
        name, call_id = function.name, f"{function.name}.{key}"
        try:
            run.claimed, request = await self.io(self._claim, name, key, run)
            if not run.claimed:
                function.elsewhere[key] = run.lease.attempt  # another process took it first
                return
            if request is None:  # finished (and removed) by another process meanwhile
                return
            if run.lease.attempt > 1:
                self.metrics.retried.labels(name).inc()
                log.info("call %s: run %d (an earlier runner stopped)", call_id, run.lease.attempt)
            outcome = await self._outcome(function, request, run)
            await self._record(function, key, outcome, run)
        except StorageUnavailable as exc:  # the lease runs out; this or another process tries again
            log.warning("call %s: the queue's store failed, tried again later: %s", call_id, exc.message)
            function.elsewhere[key] = run.lease.attempt
        finally:
            function.running.pop(key, None)
            function.wake.set()
            self.count(function)

    def _claim(self, name: str, key: str, run: Run) -> tuple[bool, CallRequest | None]:
        """In a store thread: take the run (False: another runner has it), then read the call
        (None: it is gone, finished elsewhere; the lease just taken is dropped)."""
        if not self.storage.claim(name, key, run.lease):
            return False, None
        request = self.storage.read_request(name, key)
        if request is None:
            with run.lock:
                run.ended = True
                self.storage.drop_leases(name, key, run.lease.attempt)
        return True, request

    async def _outcome(self, function: KnownCalls, request: CallRequest, run: Run) -> Outcome:
        """Run the call (again after 429/502/503/504, up to ``max_attempts`` runs in all)."""
        max_attempts, runs = self.settings.max_attempts, run.lease.attempt
        if runs > max_attempts:
            why = f"gave up after {max_attempts} runs: the process running it stopped each time"
            return self._failed(request, run, runs - 1, 503, why)
        while True:
            async with self._turn(function):
                answer = await self._answer(request)
            status = outcome_status(answer.status)
            if status is not None or runs >= max_attempts:
                break
            self.metrics.retried.labels(request.function).inc()
            await asyncio.sleep(retry_wait_s(runs, answer.retry_after_s))
            runs += 1
        error: str | None = None
        if status != "done":
            error = _error_of(answer)
            if status is None:
                error = f"gave up after {runs} runs; the last answered {answer.status}: {error}"
        return Outcome(
            request.id,
            status or "failed",
            answer.status,
            answer.headers,
            answer.body,
            request.accepted_at,
            run.started_at,
            self.clock(),
            runs,
            request.callback,
            error,
        )

    async def _answer(self, request: CallRequest) -> Answer:
        try:
            return await self.runner.run(request)
        except Exception:  # a bug of ours, not the caller's: recorded as the 500 a request would get
            log.exception("call %s: running it failed", request.id)
            body = b'{"error": "internal error (request id %s)"}' % request.id[-32:].encode()
            return Answer(500, (("content-type", "application/json"),), body)

    def _failed(self, request: CallRequest, run: Run, runs: int, status: int, error: str) -> Outcome:
        body = orjson.dumps({"error": error})
        headers = (("content-type", "application/json"),)
        return Outcome(
            request.id, "failed", status, headers, body, request.accepted_at, run.started_at,
            self.clock(), runs, request.callback, error,
        )  # fmt: skip

    async def _record(self, function: KnownCalls, key: str, outcome: Outcome, run: Run) -> None:
        """Record the outcome (first writer wins), then remove what the call no longer needs."""
        name = function.name
        if await self.io(self._write_outcome, name, key, outcome, run):
            (self.metrics.completed if outcome.status == "done" else self.metrics.failed).labels(name).inc()
            self._completions.append(time.monotonic())
            function.finished[key] = time.monotonic()
            if outcome.callback:
                doc = document(outcome, self.settings.result_ttl_s, None, for_callback=True)
                self.callbacks.deliver(name, key, outcome.id, outcome.callback, doc)
        else:
            self.metrics.discarded.labels(name).inc()
            log.warning("call %s: a run finished after another had recorded its outcome", outcome.id)

    def _write_outcome(self, name: str, key: str, outcome: Outcome, run: Run) -> bool:
        """In a store thread: whether this run's outcome is the one recorded. A callback is noted
        owed first (a crash after the record still owes it); the request and leases go last."""
        if outcome.callback:
            self.storage.mark_callback(name, key, "pending")
        recorded = self.storage.record(name, key, outcome)
        with run.lock:
            run.ended = True
            self.storage.drop_leases(name, key, run.lease.attempt)
        self.storage.delete_request(name, key)
        return recorded

    async def _callback_ended(self, name: str, key: str, state: str, detail: bytes) -> None:
        try:
            await self.io(self.storage.mark_callback, name, key, state, detail)
        except StorageUnavailable as exc:  # still noted pending: the next process delivers it again
            log.warning("call %s.%s: its callback's end could not be noted: %s", name, key, exc.message)

    # --- leases -------------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        """Renew the lease of every run going, every ``lease_s / 3``."""
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            for function in list(self.functions.values()):
                for key, run in list(function.running.items()):
                    if key not in function.running or not run.claimed:
                        continue  # finished while the leases before it were written, or not claimed yet
                    run.lease = Lease(self.owner, self.clock() + self.settings.lease_s, run.lease.attempt)
                    try:
                        await self.io(self._renew, function.name, key, run)
                    except StorageUnavailable as exc:
                        log.warning("call %s.%s: its lease could not be renewed: %s", function.name, key, exc)

    def _renew(self, name: str, key: str, run: Run) -> None:
        """In a store thread: write the run's lease again, unless the run dropped it meanwhile."""
        with run.lock:
            if not run.ended:
                self.storage.renew(name, key, run.lease)

    # --- helpers ------------------------------------------------------------------------------

    async def io(self, func: Callable[..., T], *args: Any) -> T:
        """A blocking store call, in the queue's own threads (never the loop's default pool, which
        model loading and other work share)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="fnserve-async-store")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)
        except RuntimeError:
            if not self._stopping:
                raise
            raise NotReady("asynchronous calls are shutting down here; retry on another replica") from None

    def count(self, function: KnownCalls) -> None:
        self.metrics.queued.labels(function.name).set(len(function.waiting) + len(function.elsewhere))
        self.metrics.running.labels(function.name).set(len(function.running))

    def _completed_per_s(self) -> float:
        cutoff = time.monotonic() - RATE_WINDOW_S
        while self._completions and self._completions[0] < cutoff:
            self._completions.popleft()
        return len(self._completions) / RATE_WINDOW_S

    def counts(self, name: str) -> dict[str, int]:
        """What this process knows of a function's calls now (for tests and the dashboard)."""
        function = self.functions.get(name)
        if function is None:
            return {"waiting": 0, "running": 0, "elsewhere": 0}
        return {
            "waiting": len(function.waiting),
            "running": len(function.running),
            "elsewhere": len(function.elsewhere),
        }


def _error_of(answer: Answer) -> str:
    """The error message of an error answer: its JSON ``error``, else its status."""
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        body = None
    message = body.get("error") if isinstance(body, dict) else None
    return scrub(str(message)) if message else f"the function answered {answer.status}"

"""What every protocol's prediction route shares: error answers, metrics, disconnects."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from fnserve.runtime.codec import Inputs
from fnserve.runtime.dashboard.series import version_label
from fnserve.runtime.errors import FnError
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.http import error_response, json_response
from fnserve.runtime.lookup import QueryHit
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.redact import scrub
from fnserve.runtime.service import Runtime

log = logging.getLogger("fnserve.app")

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")
CLIENT_GONE = 499  # nginx's code for "the client closed the connection": counted, never sent
ANSWERED_BY = "answered_by"  # request.state's: the version whose model answered the prediction
_NOT_YET: Any = object()


class ClientGone(FnError):
    status = CLIENT_GONE


def endpoint(handler: Handler) -> Handler:
    """Runtime errors become JSON answers; server-side ones carry the request id, not details."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except FnError as exc:
            if exc.status >= 500 and exc.status not in (503, 504):
                request_id = request.state.request_id
                log.error("request %s: %s", request_id, exc.message)
                shown = scrub(exc.message)
                return json_response({"error": f"{shown} (request id {request_id})"}, exc.status)
            return error_response(exc)

    return guarded


class observed:
    """Count the request by status and time it, whatever way it ends.

    A class, not ``@contextlib.contextmanager``: it wraps every prediction, and a generator-based
    context manager costs several times more per use.
    """

    __slots__ = ("function", "request", "runtime", "started")

    def __init__(self, runtime: Runtime, function: str, request: Request):
        self.runtime, self.function, self.request = runtime, function, request

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        status = 200 if kind is None else exc.status if isinstance(exc, FnError) else 500
        seconds = time.perf_counter() - self.started
        self.runtime.metrics.observe_request(self.function, status, seconds)
        # Under the version that computed the answer (predict() notes it); a request that failed
        # before any model answered counts under the version in memory.
        answered: int | None = self.request.scope.get("state", {}).get(ANSWERED_BY, _NOT_YET)
        if answered is _NOT_YET:
            loaded = self.runtime.functions[self.function].loaded
            answered = loaded.version if loaded is not None else None
        self.runtime.recent.request(self.function, version_label(answered), seconds, status)


async def predict(
    request: Request, runtime: Runtime, fn: ServedFunction, columns: Inputs, n: int, pinned: int | None
) -> Outputs:
    """Run the rows (by ``pinned`` only, if given); if the caller disconnects first, its queued
    work is dropped. Answers name ``outputs.version``: the model that computed them. A sampled
    share is captured (:mod:`fnserve.runtime.capture`) with its latency from here."""
    started = time.perf_counter()
    found = runtime.from_memory(fn, columns, n, pinned)  # a lookup table's or the cache's answers
    if found is not None and found.outputs is not None:
        outputs = found.outputs  # every row from memory: nothing to wait for, nothing to cancel
    else:
        outputs = await cancel_on_disconnect(request, runtime.predict(fn, columns, n, pinned, found))
    request.scope.setdefault("state", {})[ANSWERED_BY] = outputs.version  # for observed
    capture = runtime.capture
    if capture.enabled:
        latency_s = time.perf_counter() - started
        capture.record(fn.name, columns, n, outputs, request.state.request_id, latency_s)
    return outputs


def from_table(request: Request, runtime: Runtime, fn: ServedFunction, hit: QueryHit) -> None:
    """A GET's :class:`QueryHit` answered, as :func:`predict` answers a row its table holds:
    counted, noted and captured (the caller encodes the row's answer)."""
    started = time.perf_counter()
    runtime.shortcuts[fn.name].count_hit(hit)
    request.scope.setdefault("state", {})[ANSWERED_BY] = hit.version
    if runtime.capture.enabled:
        outputs = hit.table.row(hit.row)
        latency_s = time.perf_counter() - started
        runtime.capture.record(fn.name, hit.rows(), 1, outputs, request.state.request_id, latency_s)


WATCH_AFTER_S = 0.05  # answers faster than this never pay for a disconnect watcher


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` in this task; a disconnect seen meanwhile cancels it (dropping queued work).

    Only work still waiting after ``WATCH_AFTER_S`` gets a watcher (a task reading the
    connection), started by one periodic sweep per event loop: most answers come sooner, and a
    timer or a task per request is a measurable share of a fast prediction's cost.
    """
    current = asyncio.current_task()
    assert current is not None
    entry = _Waiting(request, current)
    sweep = _Sweep.of(asyncio.get_running_loop())
    sweep.add(entry)
    try:
        return await work
    except asyncio.CancelledError:
        if entry.gone:
            raise ClientGone("the client disconnected before the answer was ready") from None
        raise
    finally:
        sweep.remove(entry)


class _Waiting:
    __slots__ = ("gone", "request", "started", "task", "watcher")

    def __init__(self, request: Request, task: asyncio.Task[Any]):
        self.request, self.task = request, task
        self.started = time.monotonic()
        self.gone = False
        self.watcher: asyncio.Task[None] | None = None

    async def watch(self) -> None:
        # The body was read already (or there is none): the next message is the disconnect.
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.task.cancel()


class _Sweep:
    """Every ``WATCH_AFTER_S`` while work waits: start watchers for what has waited that long."""

    _per_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.young: dict[_Waiting, None] = {}  # insertion order is start order
        self.armed = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Sweep:
        sweep = cls._per_loop.get(loop)
        if sweep is None:
            sweep = cls._per_loop[loop] = cls(loop)
        return sweep

    def add(self, entry: _Waiting) -> None:
        self.young[entry] = None
        if not self.armed:
            self.armed = True
            self.loop.call_later(WATCH_AFTER_S, self.run)

    def remove(self, entry: _Waiting) -> None:
        self.young.pop(entry, None)
        if entry.watcher is not None:
            entry.watcher.cancel()

    def run(self) -> None:
        cutoff = time.monotonic() - WATCH_AFTER_S
        old = list(itertools.takewhile(lambda e: e.started <= cutoff, self.young))
        for entry in old:
            del self.young[entry]
            entry.watcher = self.loop.create_task(entry.watch())
        self.armed = bool(self.young)
        if self.armed:
            self.loop.call_later(WATCH_AFTER_S, self.run)


def version_header(version: int | None) -> dict[str, str] | None:
    return {"X-Model-Version": str(version)} if version is not None else None

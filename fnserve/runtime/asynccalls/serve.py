"""Asynchronous calls on ``fn serve`` and the runtime: the queue, run through the app's own routes.

    calls = RuntimeCalls(runtime)
    routes = [*calls.deferrable(native.routes(runtime)), *calls.routes(), ...]
    calls.bind(starlette)                # what a call is replayed through
    await calls.start() ... await calls.stop()

A call is replayed through the same route a synchronous request takes (validation, batching, lookup
tables, metrics, capture): its answer is the one the caller would have had. Pacing reads the
function's batcher: while it holds more rows than the calls being computed, they go one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from fnserve.runtime.asynccalls import web
from fnserve.runtime.asynccalls.metrics import CallMetrics
from fnserve.runtime.asynccalls.queue import CallQueue
from fnserve.runtime.asynccalls.records import CallRequest
from fnserve.runtime.asynccalls.replay import Answer, App, replay
from fnserve.runtime.asynccalls.storage import CallStore
from fnserve.runtime.http import RequestContext
from fnserve.runtime.protocols.common import endpoint
from fnserve.runtime.redact import redact_url
from fnserve.runtime.service import Runtime

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("fnserve.async")
PART = "serve"  # the runtime's folder in the queue ({queue}/serve/{function}/...)
CALLERS_HOLD_S = 0.1  # a request seen in flight this recently: callers are still there


_METRICS: weakref.WeakKeyDictionary[Runtime, CallMetrics] = weakref.WeakKeyDictionary()


def _metrics_of(runtime: Runtime) -> CallMetrics:
    """One set of metrics per runtime, however many apps are made over it (tests make several)."""
    metrics = _METRICS.get(runtime)
    if metrics is None:
        metrics = _METRICS[runtime] = CallMetrics(runtime.metrics.registry)
    return metrics


class RuntimeCalls:
    """The asynchronous calls of one runtime process (none when ``[async] max_queued = 0``)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        settings = runtime.settings.async_calls
        self.queue: CallQueue | None = None
        if settings.enabled:
            storage = CallStore(runtime.store, settings.queue_in(runtime.store.root), PART)
            if storage.writable:
                self.queue = CallQueue(settings, storage, _metrics_of(runtime), self)
            else:  # a store served over http(s): checkpoints come from it, a queue cannot live there
                log.warning(
                    "asynchronous calls are off: their queue %s cannot be written; set [async] queue",
                    redact_url(storage.url),
                )
        self._app: App | None = None
        self._context: RequestContext | None = None
        self._callers_seen = -CALLERS_HOLD_S  # when (monotonic) a request was last seen in flight
        self._reads = 0  # status reads being served now: not callers to make way for

    def deferrable(self, routes: Sequence[BaseRoute]) -> list[BaseRoute]:
        """``routes`` with each POST route taking ``Prefer: respond-async`` (the rest as they are)."""
        if self.queue is None:
            return list(routes)
        return [
            Route(r.path, self._deferring(r.endpoint), methods=sorted(r.methods - {"HEAD"}), name=r.name)
            if isinstance(r, Route) and r.methods and "POST" in r.methods
            else r
            for r in routes
        ]

    def routes(self) -> list[Route]:
        """``GET /async/{id}`` and ``GET /async/{id}/result``."""
        queue = self.queue
        if queue is None:
            return []

        async def status(request: Request) -> Response:
            with self._reading():
                return await web.status(queue, request)

        async def result(request: Request) -> Response:
            with self._reading():
                return await web.result(queue, request)

        return [
            Route("/async/{call_id}", endpoint(status), methods=["GET"]),
            Route("/async/{call_id}/result", endpoint(result), methods=["GET"]),
        ]

    def bind(self, app: App, context: RequestContext) -> None:
        """The app whose routes calls are replayed through (the routes, below request ids), and the
        request context above it, whose count of requests in flight tells callers are waiting."""
        self._app, self._context = app, context

    async def start(self) -> None:
        if self.queue is not None:
            await self.queue.start()

    async def stop(self) -> None:
        if self.queue is not None:
            await self.queue.stop(min(5.0, self.runtime.settings.drain_timeout_s))

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        self._reads += 1
        try:
            yield
        finally:
            self._reads -= 1

    def _deferring(self, handler: Handler) -> Handler:
        queue = self.queue
        assert queue is not None
        limit = self.runtime.settings.max_body_bytes

        async def accept(request: Request) -> Response:
            params = request.path_params
            name = str(params.get("target") or params.get("name") or "").partition("@")[0]
            self.runtime.function(name)  # 404 naming GET /functions for a function not served here
            return await web.accept(queue, request, name, limit)

        accepting = endpoint(accept)

        async def route(request: Request) -> Response:
            if request.method == "POST" and web.prefers_async(request.headers.get("prefer")):
                return await accepting(request)
            return await handler(request)

        return route

    # --- what the queue asks (Runner) ---------------------------------------------------------

    def serves(self, function: str) -> bool:
        return function in self.runtime.functions

    def ready(self, function: str) -> bool:
        served = self.runtime.functions.get(function)
        return served is not None and served.ready and not self.runtime.draining

    def busy(self, function: str, computing: int) -> bool:
        # Requests being served lately (a replay does not pass the request context, so these are
        # callers'; a caller between two requests is still there: hence lately, not now), but for
        # reads of calls' status (a client waiting for its call must not slow the calls down),
        # or rows in the batcher beyond what the calls being computed hold (one row each at least:
        # a call of many rows counts as busy, and goes one at a time, a batch of its own already).
        now = time.monotonic()
        if self._context is not None and self._context.in_flight > self._reads:
            self._callers_seen = now
        if now - self._callers_seen < CALLERS_HOLD_S:
            return True
        batcher = self.runtime.batchers.get(function)
        return batcher is not None and batcher.queued + batcher.in_flight > computing

    async def run(self, request: CallRequest) -> Answer:
        assert self._app is not None, "RuntimeCalls.bind(app) comes before start()"
        return await replay(self._app, request)

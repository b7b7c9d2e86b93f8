"""Asynchronous calls on the gateway: accepted here, queued in the store, sent through the proxy.

    calls = GatewayCalls(gateway, store, settings.async_calls)
    app = create_app(gateway, calls=calls)

A ``POST`` with ``Prefer: respond-async`` to any prediction path is answered 202 by the gateway
itself (:mod:`fnserve.runtime.asynccalls.web`); the replicas never see the preference. Each call is
later sent through the gateway's normal path — :class:`~fnserve.gateway.proxy.Proxy`, with its
split, retries, metrics, rollout evidence and scale-from-zero hold — so a function scaled to zero
is woken by its backlog, and the backlog's in-flight calls count toward the autoscaler's load.

Pacing: a function's calls run ``concurrency`` at a time, one at a time while synchronous requests
are in flight and its replicas are at their target load (``target_in_flight`` per ready replica).
The queue lives in ``{queue}/gateway/``, apart from ``fn serve``'s: the two never take each
other's calls. With ``protect_predictions``, submitting and reading a call need the token too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve.gateway.proxy import Proxy
from fnserve.gateway.routing import parse_path
from fnserve.runtime.asynccalls import web
from fnserve.runtime.asynccalls.metrics import CallMetrics
from fnserve.runtime.asynccalls.queue import CallQueue
from fnserve.runtime.asynccalls.records import CallRequest
from fnserve.runtime.asynccalls.replay import Answer, replay
from fnserve.runtime.asynccalls.settings import AsyncSettings
from fnserve.runtime.asynccalls.storage import CallStore
from fnserve.runtime.errors import FnError, NotFound
from fnserve.runtime.http import Receive, Scope, Send, error_response, json_response
from fnserve.runtime.redact import redact_url
from fnserve.runtime.store import CheckpointStore

if TYPE_CHECKING:
    from fnserve.gateway.service import Gateway

log = logging.getLogger("fnserve.gateway")
PART = "gateway"  # the gateway's folder in the queue ({queue}/gateway/{function}/...)
JSON = (("content-type", "application/json"),)


class GatewayCalls:
    def __init__(self, gateway: Gateway, store: CheckpointStore, settings: AsyncSettings):
        self.gateway = gateway
        self.proxy = Proxy(gateway)
        storage = CallStore(store, settings.queue_in(store.root), PART)
        metrics = CallMetrics(gateway.metrics.registry, "fnserve_gateway_async")
        self.queue = CallQueue(settings, storage, metrics, self)
        # Off with max_queued = 0, or a queue fsspec cannot write (an http(s) store): the preference
        # is then ignored, and calls answered at once, as on fn serve.
        self.enabled = settings.enabled and storage.writable
        token = gateway.options.token
        self._bearer = ((b"authorization", f"Bearer {token}".encode()),) if token else ()

    def wants(self, scope: Scope) -> bool:
        """Whether a prediction request asks to be answered asynchronously."""
        if scope["method"] != "POST" or not self.enabled:
            return False
        return any(k == b"prefer" and web.prefers_async(v.decode("latin-1")) for k, v in scope["headers"])

    async def accept(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        """Answer a prediction request that prefers ``respond-async``: 202, or the error."""
        request = Request(scope, receive)
        try:
            self._authorize(scope)
            if name not in self.gateway.functions:
                raise NotFound(f"no function named {name!r} is deployed here; see GET /functions")
            response = await web.accept(self.queue, request, name, self.gateway.options.max_body_bytes)
        except FnError as exc:
            response = error_response(exc)
        await response(scope, receive, send)

    def routes(self) -> list[Route]:
        """``GET /async/{id}`` and ``GET /async/{id}/result``, as on ``fn serve``."""

        async def status(request: Request) -> Response:
            try:
                self._authorize(request.scope)
                return await web.status(self.queue, request)
            except FnError as exc:
                return error_response(exc)

        async def result(request: Request) -> Response:
            try:
                self._authorize(request.scope)
                return await web.result(self.queue, request)
            except FnError as exc:
                return error_response(exc)

        return [
            Route("/async/{call_id}", status, methods=["GET"]),
            Route("/async/{call_id}/result", result, methods=["GET"]),
        ]

    async def start(self) -> None:
        if self.enabled:
            await self.queue.start()
        elif self.queue.settings.enabled:
            log.warning(
                "asynchronous calls are off: their queue %s cannot be written; set [async] queue",
                redact_url(self.queue.storage.url),
            )

    async def stop(self) -> None:
        if self.enabled:
            await self.queue.stop()

    def _authorize(self, scope: Scope) -> None:
        if self.proxy.bearer is not None:
            self.proxy._authorize(scope["headers"])  # the prediction routes' one rule

    # --- what the queue asks (Runner) ---------------------------------------------------------

    def serves(self, function: str) -> bool:
        return True  # a function removed since: its calls fail with the proxy's 404

    def ready(self, function: str) -> bool:
        return self.gateway.started and not self.gateway.draining

    def busy(self, function: str, computing: int) -> bool:
        route = self.gateway.functions.get(function)
        if route is None:
            return False
        in_flight = sum(v.meter.in_flight for v in route.versions.values())
        synchronous = in_flight - computing
        ready = sum(v.balancer.ready for v in route.versions.values())
        capacity = max(1, ready) * route.deployment.scaling.target_in_flight
        return synchronous > 0 and in_flight >= capacity

    async def run(self, request: CallRequest) -> Answer:
        parsed = parse_path(request.path)
        if parsed is None:  # stored by an older gateway with other routes: nothing to send it to
            body = json_response({"error": f"no route for POST {request.path}"}).body
            return Answer(404, JSON, bytes(body))
        name, pinned, path = parsed

        async def through_proxy(scope: Scope, receive: Receive, send: Send) -> None:
            await self.proxy(scope, receive, send, name, pinned, path)

        extra = self._bearer if self.proxy.bearer is not None else ()
        return await replay(through_proxy, request, extra_headers=extra)

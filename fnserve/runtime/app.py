"""The ASGI app (Starlette): the HTTP surface of DESIGN.md over a :class:`Runtime`.

app = create_app(runtime)       # serve with Hypercorn (fnserve.runtime.server) or test in-process
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve.runtime import dashboard
from fnserve.runtime.asynccalls.serve import RuntimeCalls
from fnserve.runtime.dashboard.data import runtime_data
from fnserve.runtime.errors import BadRequest, NotFound, first_line
from fnserve.runtime.http import Receive, RequestContext, Scope, Send, error_response, json_response
from fnserve.runtime.protocols import native, tfserving, v2
from fnserve.runtime.protocols.common import Handler, endpoint
from fnserve.runtime.service import Runtime

MAX_READY_WAIT_S = 30.0  # the longest a /readyz?wait_s= request is held


def create_app(runtime: Runtime) -> RequestContext:
    """The app with its routes; ``app.state.runtime`` is the runtime it serves."""

    calls = RuntimeCalls(runtime)  # POST ... Prefer: respond-async, GET /async/{id}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        await calls.start()
        yield
        await calls.stop()  # before the batchers close: runs going may finish
        await runtime.stop()

    async def healthz(_: Request) -> Response:
        return json_response({"live": True})

    async def readyz(request: Request) -> Response:
        # ?wait_s=N: a gateway holding requests for this replica learns the moment it turns ready
        wait_s = request.query_params.get("wait_s")
        if wait_s is not None and not runtime.ready:
            try:
                seconds = min(float(wait_s), MAX_READY_WAIT_S)
            except ValueError:
                return error_response(BadRequest(f"wait_s must be a number of seconds, got {wait_s!r}"))
            if seconds > 0:
                await runtime.wait_ready(seconds)
        states = {name: fn.ready for name, fn in runtime.functions.items()}
        body: dict[str, object] = {"ready": runtime.ready, "draining": runtime.draining, "functions": states}
        if runtime.standby:  # a warm pool's: waiting for SIGUSR1; prepared once fetched and imported
            body["standby"] = "activated" not in runtime.timeline
            body["prepared"] = "prepared" in runtime.timeline
        # Why a function is not ready, for a gateway holding requests for it: its last load error.
        errors = {
            name: first_line(fn.last_error)
            for name, fn in runtime.functions.items()
            if not fn.ready and fn.last_error
        }
        if errors:
            body["errors"] = errors
        # What a load in progress is doing: a gateway whose held requests time out names it
        doing = {name: fn.doing() for name, fn in runtime.functions.items() if not fn.ready}
        if runtime.standby and "activated" not in runtime.timeline:
            doing = {name: "standing by (a warm pool's, not activated)" for name in doing}
        if any(doing.values()):
            body["loading"] = {name: what for name, what in doing.items() if what}
        return json_response(
            body, 200 if runtime.ready else 503, None if runtime.ready else {"Retry-After": "1"}
        )

    async def list_functions(_: Request) -> Response:
        described = await asyncio.to_thread(lambda: [fn.describe() for fn in runtime.functions.values()])
        return json_response(
            {"functions": described, "started_at": runtime.started_at, "timeline": runtime.timeline}
        )

    async def metrics(_: Request) -> Response:
        runtime.metrics.in_flight.set(context.in_flight)
        for name, batcher in runtime.batchers.items():
            runtime.metrics.queued.labels(name).set(batcher.queued)
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def monitor(request: Request) -> Response:
        name = request.path_params.get("name")
        if name is not None:
            runtime.function(name)  # 404 naming GET /functions for a function not served here
        return json_response(await asyncio.to_thread(runtime.monitor.describe, name))

    async def dashboard_data(_: Request) -> Response:
        # Open like /metrics and /functions: names, versions and aggregate figures, no payloads.
        return json_response(runtime_data(runtime))

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(NotFound(f"no route for {request.method} {request.url.path}"))

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return json_response({"error": f"method {request.method} is not allowed here"}, 405)

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Without this, Starlette answers a plain-text 500; RequestContext still logs the exception.
        return json_response({"error": f"internal error (request id {request.state.request_id})"}, 500)

    predictions = calls.deferrable(native.routes(runtime))
    routes = [
        *predictions,  # the hot path first: Starlette matches in order
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/functions", endpoint(list_functions)),
        Route("/metrics", metrics),
        Route("/monitor", endpoint(monitor)),
        Route("/monitor/{name}", endpoint(monitor)),
        *dashboard.routes(dashboard_data),
        *calls.deferrable(v2.routes(runtime)),
        *calls.deferrable(tfserving.routes(runtime)),
        *calls.routes(),
    ]
    starlette = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed, Exception: internal_error},
    )
    starlette.state.runtime = runtime
    starlette.state.calls = calls
    hot = predictions[0]  # /function/{target}, with POST's respond-async taken in its endpoint
    assert isinstance(hot, Route) and hot.path == PREFIX + "{target}"
    context = RequestContext(PredictionRoute(starlette, hot.endpoint))
    calls.bind(starlette, context)  # replays go through Starlette: its handlers answer what they raise
    context.state = starlette.state  # type: ignore[attr-defined]
    runtime.requests_in_flight = lambda: context.in_flight
    return context


PREFIX = "/function/"


class PredictionRoute:
    """``GET``/``HEAD``/``POST /function/{target}`` handed to its endpoint straight away;
    everything else to ``app`` (Starlette, which has the same route too).

    Starlette's router and middleware around the endpoint (its error middleware, its exception
    middleware, the route list's matching and the wrappers each of them puts around ``send``)
    cost about 20 µs of the ~270 µs of CPU a prediction takes under load (py-spy at
    concurrency 64): the hot path skips them. What it loses is nothing the endpoint relies on:
    its errors are answered by the endpoint itself (``protocols.common.endpoint``), and anything
    else it raises reaches :class:`RequestContext`, which logs it and answers the same 500 as
    Starlette's handler would. Other methods, a path with more segments, or an app mounted
    under a ``root_path`` go the general way.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], endpoint: Handler):
        self.app, self.endpoint = app, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(PREFIX) and scope["method"] in ("GET", "HEAD", "POST"):
                target = path[len(PREFIX) :]
                if target and "/" not in target:
                    scope["path_params"] = {"target": target}
                    response = await self.endpoint(Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

"""The gateway's ASGI app: the runtime's paths, proxied to replicas, plus health, metrics and admin.

Prediction paths (``/function/...``, ``/v2/models/...``, ``/v1/models/...``) go straight to the
proxy without a routing table; everything else (``/healthz``, ``/readyz``, ``/v2/health/*``,
``/functions``, ``/metrics``, ``/admin/...``, ``/dashboard``) is a small Starlette app. Serve it with
:func:`fnserve.gateway.server.serve_gateway`, or in-process in tests.

    app = create_app(Gateway(LocalPlatform(settings), GatewayOptions(token=token)))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve.gateway import admin
from fnserve.gateway.async_calls import GatewayCalls
from fnserve.gateway.dashboard import data_handler, refused
from fnserve.gateway.proxy import Proxy
from fnserve.gateway.routing import FunctionRoute, parse_path
from fnserve.gateway.service import Gateway
from fnserve.gateway.upstream import UpstreamError
from fnserve.runtime import dashboard
from fnserve.runtime.http import Receive, RequestContext, Scope, Send, json_response
from fnserve.runtime.monitor import merge


class GatewayApp:
    """Prediction paths to the proxy, the rest to Starlette (which also runs the lifespan)."""

    def __init__(self, gateway: Gateway, starlette: Starlette, calls: GatewayCalls | None = None):
        self.proxy = Proxy(gateway)
        self.starlette = starlette
        self.state = starlette.state
        self.calls = calls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            parsed = parse_path(scope["path"])
            if parsed is not None:
                if self.calls is not None and self.calls.wants(scope):  # Prefer: respond-async
                    await self.calls.accept(scope, receive, send, parsed[0])
                    return
                await self.proxy(scope, receive, send, *parsed)
                return
        await self.starlette(scope, receive, send)


def create_app(gateway: Gateway, calls: GatewayCalls | None = None) -> RequestContext:
    """The app; ``app.state.gateway`` is the gateway it serves. ``calls``: its asynchronous calls
    (None: ``Prefer: respond-async`` is ignored, each call answered at once)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        if calls is not None:
            await calls.start()
        yield
        if calls is not None:
            await calls.stop()  # before the gateway: runs going may finish through its proxy
        await gateway.stop()

    async def healthz(_: Request) -> Response:
        return json_response({"live": True})

    async def readyz(_: Request) -> Response:
        ready = not gateway.draining
        body = {"ready": ready, "draining": gateway.draining, "target": gateway.target}
        return json_response(body, 200 if ready else 503, None if ready else {"Retry-After": "1"})

    async def functions(_: Request) -> Response:
        routes = sorted(gateway.functions.values(), key=lambda r: r.name)
        described = await asyncio.gather(*(describe(gateway, r) for r in routes))
        return json_response({"functions": described, "target": gateway.target})

    async def metrics(_: Request) -> Response:
        m = gateway.metrics
        for route in gateway.functions.values():
            m.in_flight.labels(route.name).set(sum(v.meter.in_flight for v in route.versions.values()))
            m.held.labels(route.name).set(route.stats.held)
            for label, version in route.versions.items():
                m.desired.labels(route.name, label).set(version.desired)
                m.ready.labels(route.name, label).set(version.balancer.ready)
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    async def monitor(request: Request) -> Response:
        if (refusal := refused(gateway, request, "monitoring data")) is not None:
            return refusal
        name = request.path_params.get("name")
        if name is not None and name not in gateway.functions:
            return json_response(
                {"error": f"no function named {name!r} is deployed; see GET /functions"}, 404
            )
        routes = [gateway.functions[name]] if name is not None else list(gateway.functions.values())
        return json_response(await merged_monitor(routes))

    async def not_found(request: Request, exc: Exception) -> Response:
        return json_response({"error": f"no route for {request.method} {request.url.path}"}, 404)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return json_response({"error": f"method {request.method} is not allowed here"}, 405)

    async def internal_error(request: Request, exc: Exception) -> Response:
        return json_response({"error": f"internal error (request id {request.state.request_id})"}, 500)

    starlette = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/v2/health/live", healthz),
            Route("/v2/health/ready", readyz),
            Route("/functions", functions),
            Route("/metrics", metrics),
            Route("/monitor", monitor),
            Route("/monitor/{name}", monitor),
            *admin.routes(gateway),
            *dashboard.routes(data_handler(gateway)),
            *(calls.routes() if calls is not None else ()),
        ],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed, Exception: internal_error},
    )
    starlette.state.gateway = gateway
    starlette.state.calls = calls
    context = RequestContext(GatewayApp(gateway, starlette, calls))
    context.state = starlette.state  # type: ignore[attr-defined]
    return context


async def describe(gateway: Gateway, route: FunctionRoute) -> dict[str, Any]:
    """A deployed function: its versions and weights, and what a ready replica says of itself
    (schema, checkpoint version); a version with no ready replica is not woken to say it."""
    versions = {}
    for label, spec in route.deployment.versions.items():
        version = route.versions[label]
        entry: dict[str, Any] = {
            "weight": spec.weight,
            "desired": version.desired,
            "ready": version.balancer.ready,
        }
        endpoint = version.balancer.pick()
        if endpoint is not None:
            entry["served"] = await _served(endpoint.pool, route.name)
        versions[label] = entry
    return {"name": route.name, "versions": versions}


async def merged_monitor(routes: list[FunctionRoute]) -> dict[str, Any]:
    """Every ready replica's ``GET /monitor/{name}``, merged: live counts summed over the replicas,
    then scored, so a function's drift is the same whatever its replica count. A replica that does
    not answer within 2 s is left out."""
    asks = [
        _replica_monitor(endpoint.pool, route.name)
        for route in routes
        for version in route.versions.values()
        for endpoint in version.balancer.endpoints
    ]
    documents = [doc for doc in await asyncio.gather(*asks) if doc is not None]
    merged = merge(documents)
    for route in routes:  # a deployed function without a ready replica still shows
        merged["functions"].setdefault(route.name, {"versions": {}})
    return merged


async def _replica_monitor(pool: Any, name: str) -> dict[str, Any] | None:
    try:
        async with asyncio.timeout(2):
            status, _, body = await pool.request(b"GET", f"/monitor/{name}".encode(), [], b"")
        if status == 200:
            doc = orjson.loads(body)
            return doc if isinstance(doc, dict) else None
    except (UpstreamError, TimeoutError, orjson.JSONDecodeError, AttributeError):
        pass
    return None


async def _served(pool: Any, name: str) -> dict[str, Any] | None:
    try:
        async with asyncio.timeout(2):
            status, _, body = await pool.request(b"GET", b"/functions", [], b"")
        if status == 200:
            found = [f for f in orjson.loads(body).get("functions", []) if f.get("name") == name]
            return dict(found[0]) if found else None
    except (UpstreamError, TimeoutError, orjson.JSONDecodeError, AttributeError):
        pass
    return None

"""The ASGI app (Starlette): the HTTP surface of DESIGN.md over a :class:`Runtime`.

app = create_app(runtime)       # serve with Hypercorn (fnserve.runtime.server) or test in-process
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve.runtime import codec
from fnserve.runtime.errors import (
    BadRequest,
    FnError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationError,
)
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.http import (
    JSON_TYPE,
    RequestContext,
    error_response,
    json_response,
    media_type,
    parse_json,
    read_body,
)
from fnserve.runtime.service import Runtime

log = logging.getLogger("fnserve.app")

MAX_INSTANCES = 10_000
Handler = Callable[[Request], Awaitable[Response]]


def create_app(runtime: Runtime) -> RequestContext:
    """The app with its routes; ``app.state.runtime`` is the runtime it serves."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await runtime.stop()

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except FnError as exc:
                if exc.status >= 500 and exc.status not in (503, 504):
                    log.error("request %s: %s", request.state.request_id, exc.message)
                    return json_response(
                        {"error": f"{exc.message} (request id {request.state.request_id})"}, exc.status
                    )
                return error_response(exc)

        return endpoint

    async def healthz(_: Request) -> Response:
        return json_response({"live": True})

    async def readyz(_: Request) -> Response:
        states = {name: fn.ready for name, fn in runtime.functions.items()}
        body = {"ready": runtime.ready, "draining": runtime.draining, "functions": states}
        return json_response(
            body, 200 if runtime.ready else 503, None if runtime.ready else {"Retry-After": "1"}
        )

    async def list_functions(_: Request) -> Response:
        described = await asyncio.to_thread(lambda: [fn.describe() for fn in runtime.functions.values()])
        return json_response({"functions": described})

    async def invoke(request: Request) -> Response:
        fn, version = _resolve(runtime, request.path_params["target"])
        started = time.perf_counter()
        status = 200
        try:
            instances = await _instances_from_request(request, fn, runtime.settings.max_body_bytes)
            predictions = await _predict(runtime, fn, instances)
            return json_response({"predictions": predictions}, headers=_version_header(version))
        except FnError as exc:
            status = exc.status
            raise
        except Exception:
            status = 500  # e.g. output that cannot be serialized; counted as what the caller gets
            raise
        finally:
            runtime.metrics.requests.labels(fn.name, str(status)).inc()
            runtime.metrics.latency.labels(fn.name).observe(time.perf_counter() - started)

    async def metrics(_: Request) -> Response:
        runtime.metrics.in_flight.set(context.in_flight)
        for name, batcher in runtime.batchers.items():
            runtime.metrics.queued.labels(name).set(batcher.queued)
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(NotFound(f"no route for {request.method} {request.url.path}"))

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return json_response({"error": f"method {request.method} is not allowed here"}, 405)

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Without this, Starlette answers a plain-text 500; RequestContext still logs the exception.
        return json_response({"error": f"internal error (request id {request.state.request_id})"}, 500)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/v2/health/live", healthz),
        Route("/v2/health/ready", readyz),
        Route("/functions", guarded(list_functions)),
        Route("/function/{target}", guarded(invoke), methods=["GET", "POST"]),
        Route("/metrics", metrics),
    ]
    starlette = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed, Exception: internal_error},
    )
    starlette.state.runtime = runtime
    context = RequestContext(starlette)
    context.state = starlette.state  # type: ignore[attr-defined]
    return context


def _resolve(runtime: Runtime, target: str) -> tuple[ServedFunction, int | None]:
    """``name`` or ``name@version``; a pinned version must be the one in memory."""
    name, _, pinned = target.partition("@")
    fn = runtime.function(name)
    if not fn.ready or fn.loaded is None:
        raise NotReady(f"function {name!r} is not ready yet (its model is loading); retry shortly")
    version = fn.loaded.version
    if pinned and pinned != str(version):
        raise NotFound(f"version {pinned!r} of {name!r} is not served here (serving version {version})")
    return fn, version


async def _instances_from_request(request: Request, fn: ServedFunction, limit: int) -> list[Any]:
    """GET: one instance from the query. POST: JSON instance(s), or raw image bytes + query."""
    schema = fn.schema
    if request.method == "GET":
        return [codec.parse_query(schema, request.query_params.multi_items())]
    body = await read_body(request, limit)
    kind = media_type(request)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return [_raw_image_instance(fn, body, request)]
    if kind not in (JSON_TYPE, "") and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {kind!r} is not accepted; send application/json or raw image bytes (image/*)"
        )
    payload = parse_json(body)
    if isinstance(payload, dict) and "instances" in payload and schema.field("instances") is None:
        instances = payload["instances"]
        if set(payload) - {"instances"}:
            raise ValidationError(
                f"unexpected keys beside 'instances': {sorted(set(payload) - {'instances'})}"
            )
        if not isinstance(instances, list) or not instances:
            raise ValidationError("instances: expected a non-empty list of input objects")
        if len(instances) > MAX_INSTANCES:
            raise PayloadTooLarge(
                f"instances: {len(instances)} instances is over the limit of {MAX_INSTANCES}"
            )
        return [codec.validate_instance(schema, inst, f"instances[{i}].") for i, inst in enumerate(instances)]
    return [codec.validate_instance(schema, payload)]


def _raw_image_instance(fn: ServedFunction, body: bytes, request: Request) -> dict[str, Any]:
    images = [f for f in fn.schema.inputs if f.kind == "image"]
    if len(images) != 1:
        raise UnsupportedMediaType(f"function {fn.name!r} does not take one image; send JSON")
    if not body:
        raise BadRequest(f"{images[0].name}: request body is empty; expected image bytes")
    field = images[0]
    instance = {
        k: codec.from_text(f, v) for k, v in request.query_params.items() if (f := fn.schema.field(k))
    }
    unknown = [k for k in request.query_params if fn.schema.field(k) is None]
    if unknown:
        raise ValidationError(f"unknown parameter {unknown[0]!r}")
    instance[field.name] = codec.decode_image(field, body, field.name)
    return codec.validate_instance(fn.schema, instance)


def _version_header(version: int | None) -> dict[str, str] | None:
    return {"X-Model-Version": str(version)} if version is not None else None


async def _predict(runtime: Runtime, fn: ServedFunction, instances: list[Any]) -> list[Any]:
    batcher = runtime.batcher(fn)
    predictions = await batcher.submit(instances, fn.spec.timeout_s)
    runtime.metrics.instances.labels(fn.name).inc(len(instances))
    return predictions

"""``/function/{name}``: fnserve's own protocol.

* ``GET /function/recs?a=1&b=x`` — one instance from query parameters;
* ``POST`` JSON — one instance ``{...}`` or ``{"instances": [...]}``;
* ``POST`` raw image bytes (``image/*``) — for a function with one image input, other inputs
  in the query string.

Answers ``{"predictions": [...]}`` with the model version in ``X-Model-Version``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve.runtime import codec
from fnserve.runtime.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationError
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.http import JSON_TYPE, json_response, media_type, parse_json, read_body
from fnserve.runtime.protocols.common import endpoint, observed, predict, version_header
from fnserve.runtime.service import Runtime

MAX_INSTANCES = 10_000


def routes(runtime: Runtime) -> list[Route]:
    async def invoke(request: Request) -> Response:
        fn, version = runtime.resolve(request.path_params["target"])
        with observed(runtime, fn.name):
            instances = await instances_from_request(request, fn, runtime.settings.max_body_bytes)
            columns = codec.to_columns(fn.schema, instances)
            outputs = await predict(request, runtime, fn, columns, len(instances))
            return json_response({"predictions": outputs.predictions()}, headers=version_header(version))

    return [Route("/function/{target}", endpoint(invoke), methods=["GET", "POST"])]


async def instances_from_request(request: Request, fn: ServedFunction, limit: int) -> list[dict[str, Any]]:
    """GET: one instance from the query. POST: JSON instance(s), or raw image bytes + query."""
    schema = fn.schema
    if request.method == "GET":
        return [codec.parse_query(schema, request.query_params.multi_items())]
    body = await read_body(request, limit)
    kind = media_type(request)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return [raw_image_instance(fn, body, request)]
    if kind not in (JSON_TYPE, "") and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {kind!r} is not accepted; send application/json or raw image bytes (image/*)"
        )
    payload = parse_json(body)
    if isinstance(payload, dict) and "instances" in payload and schema.field("instances") is None:
        return json_instances(fn, payload)
    return [codec.validate_instance(schema, payload)]


def json_instances(fn: ServedFunction, payload: dict[str, Any]) -> list[dict[str, Any]]:
    instances = payload["instances"]
    extra = set(payload) - {"instances"}
    if extra:
        raise ValidationError(f"unexpected keys beside 'instances': {sorted(extra)}")
    if not isinstance(instances, list) or not instances:
        raise ValidationError("instances: expected a non-empty list of input objects")
    if len(instances) > MAX_INSTANCES:
        raise PayloadTooLarge(f"instances: {len(instances)} instances is over the limit of {MAX_INSTANCES}")
    return [codec.validate_instance(fn.schema, inst, f"instances[{i}].") for i, inst in enumerate(instances)]


def raw_image_instance(fn: ServedFunction, body: bytes, request: Request) -> dict[str, Any]:
    images = [f for f in fn.schema.inputs if f.kind == "image"]
    if len(images) != 1:
        raise UnsupportedMediaType(f"function {fn.name!r} does not take one image; send JSON")
    field = images[0]
    if not body:
        raise BadRequest(f"{field.name}: request body is empty; expected image bytes")
    unknown = [k for k in request.query_params if fn.schema.field(k) is None]
    if unknown:
        raise ValidationError(f"unknown parameter {unknown[0]!r}")
    instance = {
        k: codec.from_text(f, v) for k, v in request.query_params.items() if (f := fn.schema.field(k))
    }
    instance[field.name] = codec.decode_image(field, body, field.name)
    return codec.validate_instance(fn.schema, instance)

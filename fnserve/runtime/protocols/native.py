"""``/function/{name}``: fnserve's own protocol.

* ``GET /function/recs?a=1&b=x`` — one instance from query parameters;
* ``POST`` JSON — one instance ``{...}`` or ``{"instances": [...]}``;
* ``POST`` raw image bytes (``image/*``) — for a function with one image input, other inputs
  in the query string;
* ``POST`` an Arrow IPC stream (``application/vnd.apache.arrow.stream``) — one column per input,
  for large batches (:mod:`fnserve.runtime.protocols.arrow`).

Answers ``{"predictions": [...]}`` with the version of the model that computed them in
``X-Model-Version`` (the one swapped in while a request queued, if so), or an Arrow
stream of the outputs when ``Accept`` asks for it (or the body was Arrow and ``Accept`` names no
JSON). GET answers are cacheable: a weak ``ETag`` derived from the function, its model version
and the normalized query, ``Cache-Control: public, max-age=<@predict(cache_max_age_s=...)>``,
and ``304 Not Modified`` for a matching ``If-None-Match`` — without running the model.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve.runtime import codec, columns
from fnserve.runtime.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationError
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.http import (
    ARROW_STREAM_TYPE,
    JSON_TYPE,
    json_response,
    media_type,
    parse_json,
    read_body,
)
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.protocols import arrow
from fnserve.runtime.protocols.common import endpoint, observed, predict, version_header
from fnserve.runtime.schema import Schema
from fnserve.runtime.service import Runtime

MAX_INSTANCES = columns.MAX_ROWS
ARROW_TYPES = (ARROW_STREAM_TYPE, arrow.ARROW_FILE_TYPE)
T = TypeVar("T")


def routes(runtime: Runtime) -> list[Route]:
    async def invoke(request: Request) -> Response:
        fn, current, pinned = runtime.resolve(request.path_params["target"])
        with observed(runtime, fn.name, request):
            if request.method == "GET":
                filled: list[str] = []
                items = codec.query_items(request.scope["query_string"])
                instance = codec.parse_query(fn.schema, items, defaulted=filled)
                as_arrow = arrow.accepts_arrow(request.headers.get("accept", ""), default=False)
                cache = cache_headers(fn, current, instance, as_arrow)
                if "ETag" in cache and etag_matches(request.headers.get("if-none-match"), cache["ETag"]):
                    return Response(status_code=304, headers={**(version_header(current) or {}), **cache})
                outputs = await predict(
                    request, runtime, fn, codec.Rows([instance], dict.fromkeys(filled, 1)), 1, pinned
                )
                if outputs.version != current:  # swapped in while it queued: tag what answered
                    cache = cache_headers(fn, outputs.version, instance, as_arrow)
            else:
                batch, n, was_arrow = await columns_from_body(request, fn, runtime.settings.max_body_bytes)
                as_arrow = arrow.accepts_arrow(request.headers.get("accept", ""), default=was_arrow)
                outputs = await predict(request, runtime, fn, batch, n, pinned)
                cache = {}
            headers = version_header(outputs.version) or {}
            headers.update(cache)
            return answer(outputs, as_arrow, headers)

    return [Route("/function/{target}", endpoint(invoke), methods=["GET", "POST"])]


def answer(outputs: Outputs, as_arrow: bool, headers: dict[str, str]) -> Response:
    if as_arrow:
        return arrow.response(outputs, headers)
    return json_response({"predictions": outputs.jsonable()}, headers=headers)


async def columns_from_body(
    request: Request, fn: ServedFunction, limit: int
) -> tuple[dict[str, Any], int, bool]:
    """A POST body's input columns, their row count, and whether the body was Arrow."""
    schema = fn.schema
    kind = media_type(request)
    body = await read_body(request, limit)
    if kind in ARROW_TYPES:
        table = arrow.read_table(body, kind == arrow.ARROW_FILE_TYPE)
        if arrow.has_encoded_images(schema, table):  # decoded pixels are taken as they are, at once
            return (*await asyncio.to_thread(arrow.decode_table, schema, table), True)
        return (*arrow.decode_table(schema, table), True)
    if kind.startswith("image/") or kind == "application/octet-stream":
        filled: list[str] = []
        instance = raw_image_instance(fn, body, request, filled)
        return codec.Columns(codec.to_columns(schema, [instance]), dict.fromkeys(filled, 1)), 1, False
    if kind not in (JSON_TYPE, "") and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {kind!r} is not accepted; send application/json, "
            f"{ARROW_STREAM_TYPE} or raw image bytes (image/*)"
        )
    payload = parse_json(body)
    if isinstance(payload, dict) and "instances" in payload and schema.field("instances") is None:
        batch, n = await off_loop_if_images(schema, functools.partial(json_instances, fn, payload))
        return batch, n, False
    return codec.to_columns(schema, [codec.validate_instance(schema, payload)]), 1, False


async def off_loop_if_images(schema: Schema, decode: Callable[[], T]) -> T:
    """Decoding images takes milliseconds: do it in a worker thread, not on the event loop."""
    if any(f.kind == "image" for f in schema.inputs):
        return await asyncio.to_thread(decode)
    return decode()


def json_instances(fn: ServedFunction, payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``{"instances": [{...}, ...]}`` to checked columns: transposed and validated per column."""
    instances = payload["instances"]
    extra = set(payload) - {"instances"}
    if extra:
        raise ValidationError(f"unexpected keys beside 'instances': {sorted(extra)}")
    if not isinstance(instances, list) or not instances:
        raise ValidationError("instances: expected a non-empty list of input objects")
    if len(instances) > MAX_INSTANCES:
        raise PayloadTooLarge(f"instances: {len(instances)} instances is over the limit of {MAX_INSTANCES}")
    return columns.from_instances(fn.schema, instances)


def cache_headers(
    fn: ServedFunction, version: int | None, instance: dict[str, Any], as_arrow: bool
) -> dict[str, str]:
    """``ETag``/``Cache-Control`` for a GET prediction: the same inputs, function code and model
    version give the same answer, so the tag is a digest of exactly those (and the format)."""
    max_age = fn.spec.cache_max_age_s
    if max_age is None:
        return {"Cache-Control": "no-store"}
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{fn.name}\0{_source_digest(fn.found.path)}\0{version}\0{as_arrow}\0".encode())
    digest.update(orjson.dumps(instance, option=orjson.OPT_SERIALIZE_NUMPY))
    return {
        "ETag": f'W/"{version or 0}-{digest.hexdigest()}"',
        "Cache-Control": f"public, max-age={max_age}",
        "Vary": "Accept",
    }


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of ``If-None-Match`` (a list of tags, or ``*``) with ``etag``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in if_none_match.split(","))


@functools.cache
def _source_digest(path: Path) -> str:
    """The function file's content: a changed function (same model version) gets new ETags."""
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()
    except OSError:
        return "unknown"


def raw_image_instance(
    fn: ServedFunction, body: bytes, request: Request, defaulted: list[str] | None = None
) -> dict[str, Any]:
    images = [f for f in fn.schema.inputs if f.kind == "image"]
    if len(images) != 1:
        raise UnsupportedMediaType(f"function {fn.name!r} does not take one image; send JSON")
    field = images[0]
    if not body:
        raise BadRequest(f"{field.name}: request body is empty; expected image bytes")
    items = codec.query_items(request.scope["query_string"])
    return codec.parse_query(fn.schema, items, {field.name: body}, defaulted)  # decoded with the rest checked

"""``/function/{name}``: fnserve's own protocol.

* ``GET /function/recs?a=1&b=x`` — one instance from query parameters (``HEAD``: the same
  answer's headers);
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
    PreparedResponse,
    media_type,
    parse_json,
    raw_headers,
    read_body,
)
from fnserve.runtime.lookup import QueryHit
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.protocols import arrow
from fnserve.runtime.protocols.common import endpoint, from_table, observed, predict
from fnserve.runtime.schema import Schema
from fnserve.runtime.service import Runtime

MAX_INSTANCES = columns.MAX_ROWS
ARROW_TYPES = (ARROW_STREAM_TYPE, arrow.ARROW_FILE_TYPE)
T = TypeVar("T")


def routes(runtime: Runtime) -> list[Route]:
    async def invoke(request: Request) -> Response:
        fn, current, pinned = runtime.resolve(request.path_params["target"])
        with observed(runtime, fn.name, request):
            headers = raw_headers(request.scope)
            if request.method != "POST":  # GET, or HEAD: the same answer, whose body the server drops
                query = request.scope["query_string"]
                hit = runtime.shortcuts[fn.name].query_hit(current, query)  # a table's row: checked already
                if hit is not None:
                    values = hit.values
                else:
                    filled: list[str] = []
                    instance = codec.parse_query(fn.schema, codec.query_items(query), defaulted=filled)
                    values = list(instance.values())
                as_arrow = arrow.accepts_arrow(headers.get(b"accept", b"").decode("latin-1"), default=False)
                tag, cache = cache_headers(fn, current, values, as_arrow)
                if tag is not None and etag_matches(headers.get(b"if-none-match"), tag):
                    return PreparedResponse(b"", [*version_headers(current), *cache], 304)
                if hit is not None:  # answered now, by the version in memory now
                    from_table(request, runtime, fn, hit)
                    return table_answer(hit, as_arrow, [*version_headers(hit.version), *cache])
                rows = codec.Rows([instance], dict.fromkeys(filled, 1))
                outputs = await predict(request, runtime, fn, rows, 1, pinned)
                if outputs.version != current:  # swapped in while it queued: tag what answered
                    tag, cache = cache_headers(fn, outputs.version, values, as_arrow)
            else:
                batch, n, was_arrow = await columns_from_body(request, fn, runtime.settings.max_body_bytes)
                accept = headers.get(b"accept", b"").decode("latin-1")
                as_arrow = arrow.accepts_arrow(accept, default=was_arrow)
                outputs = await predict(request, runtime, fn, batch, n, pinned)
                cache = []
            return answer(outputs, as_arrow, [*version_headers(outputs.version), *cache])

    return [Route("/function/{target}", endpoint(invoke), methods=["GET", "POST"])]


RawHeaders = list[tuple[bytes, bytes]]


def answer(outputs: Outputs, as_arrow: bool, headers: RawHeaders) -> Response:
    if as_arrow:
        body, kind = arrow.encode(outputs), _ARROW
    else:
        body, kind = json_body(outputs), _JSON
    return prepared(body, kind, headers)


def prepared(body: bytes, kind: bytes, headers: RawHeaders) -> Response:
    return PreparedResponse(body, [(b"content-length", b"%d" % len(body)), (b"content-type", kind), *headers])


def json_body(outputs: Outputs) -> bytes:
    return orjson.dumps({"predictions": outputs.jsonable()}, option=_NUMPY)


def table_answer(hit: QueryHit, as_arrow: bool, headers: RawHeaders) -> Response:
    """A table row's answer, as :func:`answer` gives it; its JSON body encoded once per row."""
    table = hit.table
    if as_arrow:
        return answer(table.row(hit.row), True, headers)
    body = table.bodies.get(hit.row)
    if body is None:
        # A copy of its own size: orjson's bytes keep the ~4 KB buffer they were written in.
        body = table.bodies[hit.row] = bytes(memoryview(json_body(table.row(hit.row))))
    return prepared(body, _JSON, headers)


_JSON = JSON_TYPE.encode()
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_ARROW = ARROW_STREAM_TYPE.encode()


@functools.lru_cache(maxsize=1024)
def version_headers(version: int | None) -> RawHeaders:
    """:func:`version_header` as raw ASGI headers (never changed by a caller: the list is shared)."""
    return [(b"x-model-version", str(version).encode())] if version is not None else []


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
    fn: ServedFunction, version: int | None, values: list[Any], as_arrow: bool
) -> tuple[str | None, RawHeaders]:
    """The ``ETag`` of a GET prediction and its ``ETag``/``Cache-Control``/``Vary`` headers: the
    same inputs (``values``: the instance's, in the schema's order), function code and model
    version give the same answer, so the tag is a digest of exactly those (and the format). No
    tag for a function whose answers are not cached."""
    base = _tag_base(fn.name, fn.found.path, version, as_arrow, fn.spec.cache_max_age_s)
    if base is None:
        return None, _NO_STORE
    digest, prefix, headers = base
    digest = digest.copy()
    digest.update(orjson.dumps(values, option=_NUMPY))
    tag = f'{prefix}{digest.hexdigest()}"'
    return tag, [(b"etag", tag.encode()), *headers]


_NO_STORE: RawHeaders = [(b"cache-control", b"no-store")]


@functools.lru_cache(maxsize=1024)
def _tag_base(
    name: str, path: Path, version: int | None, as_arrow: bool, max_age: int | None
) -> tuple[Any, str, RawHeaders] | None:
    """What every tag of one function, version and format shares: the digest of them so far,
    the tag's start and the headers beside it. Worked out once, not for every GET."""
    if max_age is None:
        return None
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{name}\0{_source_digest(path)}\0{version}\0{as_arrow}\0".encode())
    headers = [(b"cache-control", f"public, max-age={max_age}".encode()), (b"vary", b"Accept")]
    return digest, f'W/"{version or 0}-', headers


def etag_matches(header: bytes | None, etag: str) -> bool:
    """RFC 9110 weak comparison of ``If-None-Match`` (a list of tags, or ``*``) with ``etag``."""
    if not header:
        return False
    if_none_match = header.decode("latin-1")
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

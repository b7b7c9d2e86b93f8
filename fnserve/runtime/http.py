"""HTTP plumbing shared by every route: bounded body reading, inflation, JSON, errors.

Bodies are limited *before* they are buffered (Content-Length, then while streaming) and
compressed bodies are limited *after* inflation, so neither a large upload nor a zip bomb
can take the process's memory.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from fnserve.runtime import rules
from fnserve.runtime.errors import BadRequest, FnError, PayloadTooLarge, Problem, UnsupportedMediaType
from fnserve.runtime.redact import scrub

log = logging.getLogger("fnserve.http")

JSON_TYPE = "application/json"
ARROW_STREAM_TYPE = "application/vnd.apache.arrow.stream"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
RAW_HEADERS = "fnserve.headers"  # the scope key of RequestContext's dict of the request's headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, headers=headers, media_type=JSON_TYPE)


class PreparedResponse(Response):
    """A response given its body and its headers as ASGI byte pairs (``content-length`` and
    ``content-type`` among them): Starlette's ``Response`` lowers, encodes and scans every
    header of every answer, a measurable share of a prediction answered from memory."""

    def __init__(self, body: bytes, raw_headers: list[tuple[bytes, bytes]], status_code: int = 200):
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


def raw_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers as :class:`RequestContext` read them (lowercase names, the last of
    a repeated header), without reading them again."""
    found = scope.get(RAW_HEADERS)
    return found if found is not None else dict(scope.get("headers", []))


def error_response(exc: FnError) -> Response:
    body = exc.payload()
    body["error"] = scrub(body["error"])  # a message may quote a store URL or a backend's text
    return json_response(body, exc.status, exc.headers)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, inflated, at most ``limit`` bytes either way, else 413."""
    if media_type(request) in FORM_TYPES:
        raise UnsupportedMediaType("form bodies are not accepted; send JSON, Arrow or raw image bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise body_ended_early(int(declared) if declared is not None else None, size) from None
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _inflate(body, encoding, limit)
    raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip or deflate")


def body_ended_early(declared: int | None = None, received: int = 0) -> BadRequest:
    """The 400 for a body that stopped before its end: the client closed its side (or its
    connection) mid-body, or its framing broke. It is a bad request, not a failure of ours; a
    client that is gone never reads it, and nothing is logged.

    >>> body_ended_early(declared=20, received=8).message
    'the request body ended after 8 of the 20 bytes its Content-Length declares'
    >>> body_ended_early().message  # no Content-Length: a chunked body
    'the chunked request body ended before its last chunk'
    """
    if declared is None:
        return BadRequest("the chunked request body ended before its last chunk")
    message = f"the request body ended after {received} of the {declared} bytes its Content-Length declares"
    return BadRequest(message)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)  # bounded: never inflates past the limit
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"inflated request body is over the limit of {limit} bytes")
        out += inflater.flush()
    except zlib.error:
        raise BadRequest(f"request body is not valid {encoding} data") from None
    if not inflater.eof:
        raise BadRequest(f"request body is truncated {encoding} data")
    if len(out) > limit:
        raise PayloadTooLarge(f"inflated request body is over the limit of {limit} bytes")
    return out


def parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest("request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc.args[0] if exc.args else exc)
        if "UTF-8" in reason:
            raise not_utf8(body) from None
        raise BadRequest(f"request body is not valid JSON: {reason}") from None


def not_utf8(body: bytes) -> BadRequest:
    """A 400 naming where a JSON body holds text that is not UTF-8 (the error path only).

    >>> not_utf8(b'{"instances": [{"country": "NL"}, {"country": "\\xff"}]}').message
    'instances[1].country: not valid UTF-8 text'
    """
    try:  # the bad bytes become lone surrogates, which the json module lets through
        document = json.loads(body.decode("utf-8", "surrogateescape"))
    except ValueError:
        return BadRequest("request body is not valid UTF-8")
    found: list[Problem] = []
    _find_bad_text(document, "", found)
    if not found:
        return BadRequest("request body is not valid UTF-8")
    return BadRequest.of(found, len(found))


def _find_bad_text(value: Any, path: str, found: list[Problem]) -> None:
    if isinstance(value, str):
        if not _is_text(value):
            found.append(Problem(path or "request body", rules.NOT_UTF8))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_bad_text(item, f"{path}[{i}]", found)
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if not _is_text(key):
                found.append(Problem(path or "request body", f"a key is {rules.NOT_UTF8}"))
            else:
                _find_bad_text(item, where, found)


def _is_text(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


_ID_PREFIX = secrets.token_hex(4)  # this process's; the counter tells its requests apart
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits, unique per process and across replicas in practice; no syscall per request
    (``uuid4`` reads the kernel's random source each time)."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


DRAIN_BYTES = 1 << 20  # an unread body up to this is read before the answer; a larger one closes
DRAIN_TIMEOUT_S = 5.0


class _Body:
    """Whether a request's body is still unread, seen through the ``receive`` handed to the app."""

    def __init__(self, receive: Receive):
        self._receive = receive
        self.unread = True

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.unread = False
        return message

    async def drain(self) -> None:
        """Read and drop what the app left unread (bounded in time: a client that stops sending
        loses its connection, as hypercorn would close it anyway)."""
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while self.unread:
                    await self.receive()
        except TimeoutError:
            pass


class RequestContext:
    """ASGI middleware: request ids, the in-flight count for draining, and a last-resort 500.

    A request id (the caller's ``X-Request-ID`` or a new one) is echoed on every response and
    logged with any failure, so an error body can stay free of stack traces and paths.

    A request answered before its body was read (a 404, a 405, a 413 by Content-Length) keeps its
    connection usable: a body of at most ``DRAIN_BYTES`` is read to its end before the answer goes
    out (hypercorn closes a connection whose request is unfinished when its answer ends, and a
    client that was told nothing sends its next request into the closed socket); a larger or
    unbounded one is answered with ``Connection: close`` so the client opens a new connection.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        scope[RAW_HEADERS] = headers
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 64 and given.isprintable() else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = False
        declared = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers or (declared is not None and declared != b"0")
        request_body = _Body(receive) if has_body else None
        drainable = declared is not None and declared.isdigit() and int(declared) <= DRAIN_BYTES

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = [(b"x-request-id", request_id.encode())]
                if request_body is not None and request_body.unread:
                    if drainable:  # before the answer: hypercorn ends the exchange with its last byte
                        await request_body.drain()
                    if request_body.unread:
                        extra.append((b"connection", b"close"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive if request_body is None else request_body.receive, send_with_id)
        except Exception:
            log.exception(
                "request %s %s failed (request id %s)", scope.get("method"), scope.get("path"), request_id
            )
            if not started:
                body = orjson.dumps({"error": f"internal error (request id {request_id})"})
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", JSON_TYPE.encode())],
                    }
                )
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            self.in_flight -= 1

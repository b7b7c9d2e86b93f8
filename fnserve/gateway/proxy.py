"""The hot path: a prediction request in, a version chosen, a replica picked, the answer out.

Raw ASGI (no Request objects, no routing table): the path was parsed once by
:func:`~fnserve.gateway.routing.parse_path`; bodies are passed through as bytes (bounded, never
decoded or re-encoded); hop-by-hop headers are dropped both ways and the request id goes along.
A request that could not reach a replica is sent to another; one that reached a replica that then
failed is sent again only when its method is idempotent (see ``balancer.may_retry``).
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING

import orjson

from fnserve.gateway.activator import VersionGone, answered, hold
from fnserve.gateway.balancer import Endpoint, may_retry
from fnserve.gateway.routing import FunctionRoute, VersionRoute
from fnserve.gateway.upstream import Headers, UpstreamError
from fnserve.runtime.errors import FnError, NotFound, PayloadTooLarge
from fnserve.runtime.http import Receive, Scope, Send, body_ended_early
from fnserve.runtime.redact import scrub

if TYPE_CHECKING:
    from fnserve.gateway.service import Gateway

log = logging.getLogger("fnserve.gateway")

# Meaningful for one connection only (RFC 9110 7.6.1), or set by us: never forwarded. (Prefer:
# the gateway answers respond-async itself, or ignores it; a replica must not answer it instead.)
HOP_BY_HOP = frozenset(
    b"connection keep-alive proxy-connection proxy-authenticate proxy-authorization te trailer "
    b"transfer-encoding upgrade host content-length expect x-request-id prefer".split()
)
NOT_RETURNED = frozenset(
    b"connection keep-alive proxy-connection proxy-authenticate te trailer transfer-encoding upgrade "
    b"content-length date server x-request-id".split()
)
MAX_ATTEMPTS = 3
JSON_HEADER = (b"content-type", b"application/json")


class Sent:
    """A request as forwarded, kept for a shadow copy."""

    __slots__ = ("body", "headers", "method", "target")

    def __init__(self) -> None:
        self.method, self.target, self.body = b"", b"", b""
        self.headers: Headers = []


class Unauthorized(FnError):
    status = 401

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Proxy:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        options = gateway.options
        self.limit = options.max_body_bytes
        self.bearer = f"Bearer {options.token}".encode() if options.protect_predictions else None

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: str, pinned: str | None, path: str
    ) -> None:
        started = time.monotonic()
        route = self.gateway.functions.get(name)
        label = ""  # the version that answered; none when the request never got that far
        copy: Sent | None = None  # the request as sent, when a rollout's shadow stage copies it
        try:
            if route is None:
                raise NotFound(f"no function named {name!r} is deployed here; see GET /functions")
            if self.bearer is not None:
                self._authorize(scope["headers"])
            version = self._version(route, pinned, scope)
            label = version.label
            window = self.gateway.shadow.wanted(route, label) if pinned is None else None
            copy = Sent() if window is not None else None
            status, headers, body, label = await self._forward(
                scope, receive, route, version, path, copy, pinned=pinned is not None
            )
        except FnError as exc:
            status, body = exc.status, orjson.dumps({"error": self._message(exc, scope)})
            headers = [JSON_HEADER, *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
        if label:
            headers.append((b"x-function-version", label.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if route is not None:
            now = time.monotonic()
            route.stats.recent.add(now, now - started)
            self.gateway.metrics.observe(name, label or "-", status, now - started)  # bounded labels
            self.gateway.recent.request(name, label or "-", now - started, status)
            trial = route.stats.trial
            if trial is not None and label and pinned is None:  # a rollout stage's evidence
                trial.observe(label, now - started, status >= 500)
                if copy is not None and copy.target:
                    self.gateway.shadow.copy(
                        route, trial, copy.method, copy.target, copy.headers, copy.body, status, body
                    )

    def _authorize(self, headers: Headers) -> None:
        for key, value in headers:
            if (
                key == b"authorization"
                and self.bearer is not None
                and hmac.compare_digest(value, self.bearer)
            ):
                return
        raise Unauthorized("this gateway's prediction routes need 'Authorization: Bearer <token>'")

    def _version(self, route: FunctionRoute, pinned: str | None, scope: Scope) -> VersionRoute:
        if pinned is not None:
            version = route.versions.get(pinned)
            if version is None:
                raise NotFound(
                    f"{route.name} has no version {pinned!r}; it has {', '.join(sorted(route.versions))}"
                )
            return version
        only = route.split.only
        if only is not None:
            return route.versions[only]
        key = route.sticky_key(scope["headers"], scope["query_string"])
        return route.versions[route.split.choose(key, salt=route.name)]

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        route: FunctionRoute,
        version: VersionRoute,
        path: str,
        copy: Sent | None = None,
        *,
        pinned: bool = False,
    ) -> tuple[int, Headers, bytes, str]:
        """The replica's answer, and the label of the version that gave it."""
        body = await self._read_body(receive, scope["headers"])
        method = scope["method"].encode()
        request_id = scope["state"]["request_id"].encode()
        headers = self._forwarded_headers(scope, request_id)
        query = scope["query_string"]
        target = (path.encode() + b"?" + query) if query else path.encode()
        if copy is not None:
            copy.method, copy.target, copy.headers, copy.body = method, target, headers, body
        meter = version.meter
        meter.started(time.monotonic())
        try:
            tried: list[Endpoint] = []
            held = False
            while True:
                endpoint = version.balancer.pick(tried)
                if endpoint is None:
                    try:
                        endpoint, held = await hold(self.gateway, route, version), True
                    except VersionGone:  # a removed candidate: by the function's split now
                        current = self.gateway.functions.get(route.name)
                        if pinned or current is None or tried:
                            raise
                        route, version = current, self._version(current, None, scope)
                        meter.finished(time.monotonic())
                        meter = version.meter
                        meter.started(time.monotonic())
                        continue
                endpoint.outstanding += 1
                try:
                    status, answer, content = await endpoint.pool.request(method, target, headers, body)
                except UpstreamError as exc:
                    if not exc.connected:
                        version.refused(endpoint)
                    if len(tried) + 1 < MAX_ATTEMPTS and may_retry(method, reached=exc.connected):
                        tried.append(endpoint)
                        self.gateway.metrics.retries.labels(route.name).inc()
                        continue
                    log.warning("request %s: %s@%s: %s", request_id.decode(), route.name, version.label, exc)
                    raise FnError(
                        f"no replica of {route.name}@{version.label} could answer", status=502
                    ) from None
                except TimeoutError:
                    raise FnError(
                        f"{route.name}@{version.label} did not answer in time", status=504
                    ) from None
                finally:
                    endpoint.outstanding -= 1
                if held:
                    answered(version)  # the first held request's answer ends a cold start
                retry = status in (502, 503) and len(tried) + 1 < MAX_ATTEMPTS
                if retry and may_retry(method, reached=True, status=status, draining=endpoint.draining):
                    tried.append(endpoint)
                    continue
                return status, [(k, v) for k, v in answer if k not in NOT_RETURNED], content, version.label
        finally:
            meter.finished(time.monotonic())

    def _forwarded_headers(self, scope: Scope, request_id: bytes) -> Headers:
        """The caller's headers less hop-by-hop ones (and those its Connection header names), with
        the request id and the caller's address added; the gateway's token is not passed on."""
        headers, connection = [], None
        for key, value in scope["headers"]:
            if key in HOP_BY_HOP:
                if key == b"connection":
                    connection = value
            elif key != b"x-forwarded-for":
                headers.append((key, value))
        if connection is not None:
            named = {token.strip().lower() for token in connection.split(b",")}
            headers = [(k, v) for k, v in headers if k not in named]
        if self.bearer is not None:
            headers = [(k, v) for k, v in headers if k != b"authorization"]
        headers.append((b"x-request-id", request_id))
        client = scope.get("client")
        if client:
            forwarded = [v for k, v in scope["headers"] if k == b"x-forwarded-for"]
            headers.append((b"x-forwarded-for", b", ".join([*forwarded, client[0].encode()])))
        return headers

    async def _read_body(self, receive: Receive, headers: Headers) -> bytes:
        """The request body as sent (still compressed, if it was), at most ``max_body_bytes``; a
        body the client stopped sending is a 400 (see ``body_ended_early``), never forwarded."""
        limit, declared = self.limit, None
        for key, value in headers:
            if key == b"content-length" and value.isdigit():
                declared = int(value)
                if declared > limit:
                    raise PayloadTooLarge(
                        f"request body of {declared} bytes is over the limit of {limit} bytes"
                    )
        message = await receive()
        body: bytes = message.get("body", b"")
        if message["type"] == "http.request" and not message.get("more_body", False) and len(body) <= limit:
            return body
        chunks, size = [body], len(body)
        while True:
            if message["type"] == "http.disconnect":
                raise body_ended_early(declared, size)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)

    @staticmethod
    def _message(exc: FnError, scope: Scope) -> str:
        message = scrub(exc.message)  # a replica's or a platform's text may quote a store URL
        if exc.status >= 500 and exc.status not in (503, 504):
            request_id = scope["state"]["request_id"]
            log.error("request %s: %s", request_id, message)
            return f"{message} (request id {request_id})"
        return message

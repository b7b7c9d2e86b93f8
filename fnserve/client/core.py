"""What the sync and the async client share: building requests, reading answers, deciding retries.
Nothing here does I/O, so both behave the same and this is tested alone; the one outside fact read
is the clock, for a ``Retry-After`` given as a date (``parse_retry_after(..., now=)`` fixes it).
"""

from __future__ import annotations

import base64
import email.utils
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from fnserve.project import DEFAULT_PORT

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
JSON_HEADERS = {"content-type": "application/json"}


class ClientError(Exception):
    """The server answered with an error (``status``), or could not be reached (``status`` 0).

    >>> str(ClientError("422: x: expected a number", 422)), ClientError("down").status
    ('422: x: expected a number', 0)
    """

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Call:
    """One prepared HTTP request: built once, sent (and retried) as is."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expected: int | None = None  # predictions the answer must hold (None: do not check)


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry an overloaded answer (429/503): after the server's ``Retry-After``, a bounded
    number of times and a bounded total wait.

    >>> policy = RetryPolicy(retries=2, max_wait_s=5.0)
    >>> policy.wait_s(503, "1.5", attempt=0, waited_s=0.0)
    1.5
    >>> policy.wait_s(429, None, attempt=1, waited_s=1.5)   # no header: exponential backoff
    0.2
    >>> policy.wait_s(503, "10", attempt=1, waited_s=0.0) is None   # would exceed max_wait_s
    True
    """

    retries: int = 3  # retries after the first try
    max_wait_s: float = 30.0  # total time spent waiting between tries, at most
    backoff_s: float = 0.1  # first wait when the server names none; doubles each retry
    statuses: tuple[int, ...] = (429, 503)

    def wait_s(self, status: int, retry_after: str | None, attempt: int, waited_s: float) -> float | None:
        """Seconds to wait before retrying try number ``attempt`` (0-based), or None to give up."""
        if status not in self.statuses or attempt >= self.retries:
            return None
        wait = parse_retry_after(retry_after)
        if wait is None:
            wait = self.backoff_s * 2**attempt
        return wait if waited_s + wait <= self.max_wait_s else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds or an HTTP date; None if absent or bad.

    >>> parse_retry_after("2"), parse_retry_after("0.5"), parse_retry_after("soon")
    (2.0, 0.5, None)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
    6.0
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


# --- building requests ----------------------------------------------------------------------------


def function_path(function: str) -> str:
    """``recs`` or ``recs@3`` (a pinned version) -> the function's path."""
    return f"/function/{function}"


def queryable(value: Any) -> bool:
    """Whether a value travels in a query string: a scalar, or a flat list of scalars (a tensor)."""
    if isinstance(value, (str, int, float)):
        return True
    if hasattr(value, "ndim") and hasattr(value, "tolist"):  # a numpy scalar or array
        return bool(value.ndim <= 1)
    return isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)


def query_value(value: Any) -> str:
    """``True`` -> ``true``, ``[1, 2]`` -> ``1,2``, anything else as text."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(query_value(v) for v in value)
    return str(value)


def encode_json(payload: Any) -> bytes:
    """orjson, with numpy values and ``bytes`` (sent as ``{"b64": ...}``, e.g. images) allowed."""
    return orjson.dumps(payload, default=_bytes_as_b64, option=orjson.OPT_SERIALIZE_NUMPY)


def _bytes_as_b64(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def single_call(function: str, inputs: Mapping[str, Any]) -> Call:
    """GET with query parameters when every input fits one, else POST one JSON instance."""
    if all(queryable(v) for v in inputs.values()):
        params = {k: query_value(v) for k, v in inputs.items()}
        return Call("GET", function_path(function), params=params, expected=1)
    body = encode_json(dict(inputs))
    return Call("POST", function_path(function), content=body, headers=JSON_HEADERS, expected=1)


def batch_call(function: str, instances: Sequence[Mapping[str, Any]]) -> Call:
    """POST ``{"instances": [...]}``: one request, one prediction per instance."""
    body = encode_json({"instances": list(instances)})
    return Call("POST", function_path(function), content=body, headers=JSON_HEADERS, expected=len(instances))


def bytes_call(function: str, data: bytes, content_type: str, params: Mapping[str, Any]) -> Call:
    """POST a raw body (an image), the other inputs as query parameters."""
    query = {k: query_value(v) for k, v in params.items()}
    headers = {"content-type": content_type}
    return Call("POST", function_path(function), params=query, content=data, headers=headers, expected=1)


def submit_call(
    function: str, instances: Mapping[str, Any] | Sequence[Mapping[str, Any]], callback_url: str | None
) -> Call:
    """POST one instance (a mapping) or a batch (a list of them) with ``Prefer: respond-async``."""
    payload = dict(instances) if isinstance(instances, Mapping) else {"instances": list(instances)}
    headers = {**JSON_HEADERS, "prefer": "respond-async"}
    if callback_url:
        headers["callback-url"] = callback_url
    return Call("POST", function_path(function), content=encode_json(payload), headers=headers)


def call_path(call_id: str) -> str:
    """The status path of an asynchronous call.

    >>> call_path("recs.0190a1b2c3d4e5f60718293a4b5c6d7e")
    '/async/recs.0190a1b2c3d4e5f60718293a4b5c6d7e'
    """
    return f"/async/{urllib.parse.quote(call_id, safe='.')}"


def accepted_id(response: httpx.Response) -> str:
    """The id in a 202 answer to a submitted call."""
    body = json_body(response)
    if response.status_code != 202 or not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise ClientError(
            f"{response.status_code}: the call was answered at once, not accepted for later: the server "
            "takes no asynchronous calls ([async] max_queued = 0?)",
            response.status_code,
        )
    return str(body["id"])


def call_outcome(status: Any) -> list[Any] | None:
    """The predictions of a finished call's status document; None while it is pending or running;
    a ClientError with the function's status and message if it failed.

    >>> call_outcome({"status": "running"}) is None
    True
    >>> call_outcome({"status": "done", "result": {"predictions": [1.0]}})
    [1.0]
    >>> call_outcome({"status": "failed", "http_status": 422, "error": "x: expected a number"})
    Traceback (most recent call last):
    fnserve.client.core.ClientError: 422: x: expected a number
    """
    state = status.get("status") if isinstance(status, dict) else None
    if state in ("pending", "running"):
        return None
    if state == "failed":
        code = int(status.get("http_status") or 0)
        raise ClientError(f"{code}: {status.get('error') or 'the call failed'}", code)
    if state != "done":
        raise ClientError(f"not a call's status document: {str(status)[:200]}", 200)
    return predictions(status.get("result"), None)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items.

    >>> [list(c) for c in chunks([1, 2, 3, 4, 5], 2)]
    [[1, 2], [3, 4], [5]]
    """
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- reading answers ------------------------------------------------------------------------------


def check(response: httpx.Response, tries: int = 1) -> httpx.Response:
    """The answer if it succeeded; else a ClientError with the server's message, saying how many
    tries an overloaded server refused."""
    status = response.status_code
    if status < 400:
        return response
    refused = f" (refused {tries} tries)" if tries > 1 and status in RetryPolicy.statuses else ""
    message = error_message(status, response.content, response.reason_phrase)
    raise ClientError(f"{message}{refused}", status)


def error_message(status: int, content: bytes, reason: str = "") -> str:
    """``status: message`` from an error answer: its JSON ``error``, else its text shortened (a
    proxy's HTML page), else the reason phrase.

    >>> error_message(422, b'{"error": "x: expected a number"}')
    '422: x: expected a number'
    >>> error_message(502, b"<html><body>Bad   gateway</body></html>")
    '502: <html><body>Bad gateway</body></html>'
    """
    try:
        body = orjson.loads(content) if content else {}
        message = body.get("error") if isinstance(body, dict) else None
    except orjson.JSONDecodeError:
        message = " ".join(content.decode("utf-8", "replace").split())[:200]
    return f"{status}: {message or reason or 'error'}"


def json_body(response: httpx.Response) -> Any:
    """The JSON body of a successful answer."""
    try:
        return orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        text = " ".join(response.text.split())[:200]
        raise ClientError(f"{response.status_code}: the answer is not JSON: {text!r}", 200) from None


def predictions(body: Any, expected: int | None) -> list[Any]:
    """The ``predictions`` list of an answer, checked to hold ``expected`` items."""
    found = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(found, list):
        raise ClientError("the answer has no 'predictions' list; is this an fnserve URL?", 200)
    if expected is not None and len(found) != expected:
        raise ClientError(f"asked for {expected} predictions, the answer holds {len(found)}", 200)
    return found


def transport_message(url: str, exc: httpx.TransportError, timeout_s: float) -> str:
    """What a connection-level failure means, for a human."""
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer from {url} within {timeout_s:g} s ({type(exc).__name__})"
    detail = str(exc) or type(exc).__name__
    return f"cannot reach {url}: {detail} (is fn serve, the container or the gateway running there?)"


def limits(concurrency: int) -> httpx.Limits:
    """A keep-alive pool sized to the requests in flight, so each reuses a warm connection."""
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

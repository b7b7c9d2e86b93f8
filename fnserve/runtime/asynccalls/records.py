"""What the queue keeps, as plain data: a call's id, the request as accepted, its lease, its outcome.

A file in the queue is a one-line JSON header, a newline, then the body bytes as they are (a
request's body; the answer's): nothing is re-encoded, so a 60 MB Arrow body costs no base64.

    >>> request = CallRequest("recs.0190a1b2c3d4e5f60718293a4b5c6d7e", "POST", "/function/recs", "",
    ...                       (("content-type", "application/json"),), b'{"x": 1}', accepted_at=1.0)
    >>> CallRequest.decode(request.encode()) == request
    True
    >>> outcome_status(200), outcome_status(422), outcome_status(503)
    ('done', 'failed', None)
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from fnserve.runtime.errors import NotFound
from fnserve.runtime.redact import is_secret_name

# "recs.0190a1b2c3d4e5f60718293a4b5c6d7e": the function, then 12 hex digits of the acceptance time
# in milliseconds (so ids sort oldest first, and a queue is worked off in that order) and 20 random.
ID_RE = re.compile(r"^([a-z][a-z0-9_-]{0,62})\.([0-9a-f]{32})$")
RETRIED_STATUSES = frozenset({429, 502, 503, 504})  # overloaded, unreachable, not ready, too slow

# Request headers that describe the connection, the preference itself, or the caller's credentials:
# never stored (a replay sends the body as stored, with a length of its own).
_NOT_STORED = frozenset(
    (
        *("connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"),
        *("host", "content-length", "content-encoding", "expect", "x-request-id"),
        *("prefer", "callback-url", "authorization", "proxy-authorization", "proxy-authenticate", "cookie"),
    )
)
KEPT_ANSWER_HEADERS = ("content-type", "x-model-version", "x-function-version")


def new_id(function: str, now: float) -> str:
    """A fresh id for a call of ``function`` accepted at ``now`` (Unix seconds). Its random part
    is what keeps a call's result to whoever was given the id: 80 bits from the kernel's CSPRNG.

    >>> new_id("recs", 1.5).startswith("recs.0000000005dc")
    True
    """
    return f"{function}.{int(now * 1000) & 0xFFFFFFFFFFFF:012x}{_random_bytes(10).hex()}"


_pool = bytearray()
_pool_lock = threading.Lock()


def _random_bytes(n: int) -> bytes:
    """``n`` bytes of ``os.urandom``, drawn 4 KiB at a time: one read of the kernel's random source
    per ~400 ids (measured here, a read per id was a tenth of an accept's time on the event loop)."""
    global _pool
    with _pool_lock:
        if len(_pool) < n:
            _pool = bytearray(secrets.token_bytes(4096))
        taken = bytes(_pool[:n])
        del _pool[:n]
    return taken


def parse_id(call_id: str) -> tuple[str, str]:
    """``(function, key)`` of a call id; a 404 naming the expected form for anything else.

    >>> parse_id("recs.0190a1b2c3d4e5f60718293a4b5c6d7e")
    ('recs', '0190a1b2c3d4e5f60718293a4b5c6d7e')
    """
    found = ID_RE.fullmatch(call_id)
    if found is None:
        shown = call_id if len(call_id) <= 80 and call_id.isprintable() else call_id[:80].encode().hex()
        raise NotFound(
            f"no asynchronous call {shown!r}: an id is the function's name, a dot and 32 hex digits, "
            "as the 202 answer gave it"
        )
    return found.group(1), found.group(2)


def stored_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """The request headers a replay needs: connection-level ones, the preference and anything that
    may be a credential (``Authorization``, cookies, ``X-Api-Key``...) are left out.

    >>> stored_headers([(b"content-type", b"application/json"), (b"authorization", b"Bearer t"),
    ...                 (b"prefer", b"respond-async"), (b"x-api-key", b"k"), (b"accept", b"*/*")])
    (('content-type', 'application/json'), ('accept', '*/*'))
    """
    kept = []
    for key, value in headers:
        name = key.decode("latin-1").lower()
        if name not in _NOT_STORED and not is_secret_name(name):
            kept.append((name, value.decode("latin-1")))
    return tuple(kept)


def outcome_status(http_status: int) -> str | None:
    """What an answer makes of a call: ``done`` (2xx), ``failed`` (any other error the synchronous
    call would have given), or None: try again later (overloaded, unreachable, not ready, too slow)."""
    if 200 <= http_status < 300:
        return "done"
    return None if http_status in RETRIED_STATUSES else "failed"


@dataclass(frozen=True)
class CallRequest:
    """A call as accepted: enough to send it again exactly as the caller sent it (less the preference)."""

    id: str
    method: str
    path: str  # "/function/recs@3", "/v2/models/recs/infer", ...
    query: str  # the raw query string (latin-1), without "?"
    headers: tuple[tuple[str, str], ...]
    body: bytes
    accepted_at: float  # Unix seconds
    callback: str | None = None  # where the outcome is POSTed (a secret: never shown or logged)

    @property
    def function(self) -> str:
        return parse_id(self.id)[0]

    def encode(self) -> bytes:
        header = dataclasses.asdict(self)
        del header["body"]
        return _framed(header, self.body)

    @classmethod
    def decode(cls, data: bytes) -> CallRequest:
        header, body = _unframed(data)
        header["headers"] = tuple(tuple(pair) for pair in header["headers"])
        return cls(**header, body=body)


@dataclass(frozen=True)
class Lease:
    """A runner's claim on one run (``attempt``) of a call, good until ``until`` (Unix seconds)."""

    owner: str
    until: float
    attempt: int

    def encode(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> Lease:
        return cls(**orjson.loads(data))


@dataclass(frozen=True)
class Outcome:
    """A call's recorded end: written once (the first writer wins), kept for ``result_ttl_s``."""

    id: str
    status: str  # "done" or "failed"
    http_status: int  # what the synchronous call would have answered
    headers: tuple[tuple[str, str], ...]  # its content type and version headers
    body: bytes  # its body, as it would have been sent
    accepted_at: float
    started_at: float
    finished_at: float
    attempts: int  # runs it took (more than one: retried, or its runner stopped mid-way)
    callback: str | None = None  # copied from the request, which is removed once this is written
    error: str | None = None  # failed: why, in one line

    def encode(self) -> bytes:
        header = dataclasses.asdict(self)
        del header["body"]
        return _framed(header, self.body)

    @classmethod
    def decode(cls, data: bytes) -> Outcome:
        header, body = _unframed(data)
        header["headers"] = tuple(tuple(pair) for pair in header["headers"])
        return cls(**header, body=body)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def json_body(self) -> Any:
        """The answer's body as JSON, or None when it is not JSON (an Arrow stream)."""
        if "json" not in (self.header("content-type") or ""):
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


def _framed(header: dict[str, Any], body: bytes) -> bytes:
    return orjson.dumps(header) + b"\n" + body


def _unframed(data: bytes) -> tuple[dict[str, Any], bytes]:
    line, newline, body = data.partition(b"\n")
    if not newline:
        raise ValueError("not a queue record: no header line")
    header = orjson.loads(line)
    if not isinstance(header, dict):
        raise ValueError("not a queue record: the header is not an object")
    return header, body

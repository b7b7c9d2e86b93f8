"""Send a stored call through an ASGI app in this process, as if its caller had sent it now.

The runtime replays a call through its own routes, the gateway through its proxy: the answer is
the one the synchronous call would have had, computed by the same code, counted by the same metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fnserve.runtime.asynccalls.records import KEPT_ANSWER_HEADERS, CallRequest
from fnserve.runtime.http import Message, Scope

App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


@dataclass(frozen=True)
class Answer:
    """What a synchronous call answered: status, the headers worth keeping, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    retry_after_s: float | None = None  # an overloaded answer's Retry-After, in seconds


async def replay(
    app: App, request: CallRequest, *, extra_headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Answer:
    """``request`` through ``app`` (its id is the request id); the answer once its body is complete."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
    headers += [(b"content-length", str(len(request.body)).encode()), *extra_headers]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": None,
        "server": None,
        "state": {"request_id": request.id[-32:]},
    }
    done = asyncio.Event()
    sent_body = False
    status, answer_headers, chunks = 500, [], []

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await done.wait()  # nobody disconnects from a replay: it ends when the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, answer_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            answer_headers = message.get("headers", [])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    kept = tuple(
        (name, value.decode("latin-1"))
        for key, value in answer_headers
        if (name := key.decode("latin-1").lower()) in KEPT_ANSWER_HEADERS
    )
    retry_after = next((v for k, v in answer_headers if k.lower() == b"retry-after"), b"")
    return Answer(status, kept, b"".join(chunks), _seconds(retry_after.decode("latin-1")))


def _seconds(text: str) -> float | None:
    """``Retry-After`` as seconds (a date, or nonsense: None).

    >>> _seconds("2"), _seconds("0.5"), _seconds("Wed, 21 Oct 2026 07:28:00 GMT"), _seconds("")
    (2.0, 0.5, None, None)
    """
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None

"""Two small overrides of how Hypercorn handles an HTTP/1.1 connection, for both servers.

* **A connection the client has closed is released at once.** Hypercorn's asyncio server stops
  reading at the client's EOF, but a connection that was idle between requests then waits for its
  keep-alive timer before closing its own side: 75 s in CLOSE_WAIT for every client that closed
  first, so connection churn piled up open descriptors. Nothing can arrive on it any more, so the
  timer is stopped when reading ends, and a connection that turns idle after that is closed; a
  request still in flight is answered first, so a client that only half-closed gets its answer.
* **A request Hypercorn cannot read is answered in JSON, naming the problem.** When h11 finds the
  framing broken (a body shorter than its Content-Length, bad chunked encoding, a malformed head),
  Hypercorn answers the 400 itself, before the app hears of it, and closes; but with an empty
  body. The app then sees the client disconnect mid-body; it answers the same 400 itself where
  Hypercorn does not (when the client's last bytes and its EOF come in one read, h11 never hears
  of the EOF), see :func:`~fnserve.runtime.http.body_ended_early`.

Hypercorn has no setting for either, and the app cannot do them (it is not called for an idle
connection, nor before Hypercorn answers). Both are subclasses overriding as little as they can,
installed under the names Hypercorn creates them by; ``tests/runtime/test_broken_bodies.py``
fails if Hypercorn changes in a way that undoes them.
"""

from __future__ import annotations

import re
import sys

import h11
import hypercorn.protocol
import orjson
from hypercorn.asyncio import run as asyncio_run
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.events import Closed, Event, Updated
from hypercorn.protocol import h11 as h11_protocol

from fnserve.runtime.http import JSON_TYPE, body_ended_early

# h11's words for a body cut short by the client's EOF (hypercorn passes no more than the error)
_SHORT_BODY = re.compile(r"complete message body \(received (\d+) bytes, expected (\d+)\)")


class ReleasingTCPServer(TCPServer):
    reading_ended = False

    async def _read_data(self) -> None:
        await super()._read_data()  # returns at the client's EOF (or a failed read)
        self.reading_ended = True
        await self.idle_task.stop()  # no request can come any more: let the connection close now

    async def protocol_send(self, event: Event) -> None:
        # h11 may not have seen the EOF (Hypercorn stops reading when the client's last bytes and
        # its EOF come in one read), so after the answer in flight it would wait for another request.
        if isinstance(event, Updated) and event.idle and self.reading_ended:
            event = Closed()
        await super().protocol_send(event)


class JsonErrorsH11Protocol(h11_protocol.H11Protocol):
    async def _send_error_response(self, status_code: int) -> None:
        # Hypercorn calls this only while handling h11's RemoteProtocolError, so that is the
        # exception being handled here: it says what was wrong.
        message = unreadable_request(sys.exc_info()[1], status_code, self.config.h11_max_incomplete_size)
        body = orjson.dumps({"error": message})
        headers = [
            (b"content-type", JSON_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


def unreadable_request(error: BaseException | None, status: int, head_limit: int) -> str:
    """What is wrong with a request h11 could not read, in the words of the app's own errors.

    >>> unreadable_request(h11.RemoteProtocolError(
    ...     "peer closed connection without sending complete message body (received 8 bytes, expected 20)"
    ... ), 400, 16384)
    'the request body ended after 8 of the 20 bytes its Content-Length declares'
    >>> unreadable_request(h11.RemoteProtocolError("illegal chunk header: bytearray(b'zz')"), 400, 16384)
    "the request body's chunked encoding is malformed (illegal chunk header)"
    """
    text = str(error or "")
    if status == 431:
        return f"the request line and headers are over {head_limit} bytes"
    if short := _SHORT_BODY.search(text):
        return body_ended_early(declared=int(short[2]), received=int(short[1])).message
    if "incomplete chunked read" in text:
        return body_ended_early().message
    reason = text.split(":", 1)[0]  # h11 goes on with the repr of the bytes at fault: not for users
    if "chunk" in reason:
        return f"the request body's chunked encoding is malformed ({reason})"
    return f"the request is not valid HTTP/1.1 ({reason})" if reason else "the request is not valid HTTP/1.1"


def install() -> None:
    """Make Hypercorn's asyncio server use the two overrides (idempotent)."""
    asyncio_run.TCPServer = ReleasingTCPServer  # type: ignore[misc]
    hypercorn.protocol.H11Protocol = JsonErrorsH11Protocol  # type: ignore[misc]

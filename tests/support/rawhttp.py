"""HTTP/1.1 over a raw socket, for what no HTTP client sends: bodies shorter than their
Content-Length, broken chunked framing, a half-closed connection.

    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(client).startswith(b"HTTP/1.1 200")
        client.shutdown(socket.SHUT_WR)
        assert read_until_closed(client) == b""  # the server closed its side too
"""

from __future__ import annotations

import logging
import socket

import pytest


def read_until_closed(client: socket.socket, timeout_s: float = 2.0) -> bytes:
    """All the server sends until it closes its side; fails if it has not within ``timeout_s``."""
    client.settimeout(timeout_s)
    out = b""
    try:
        while chunk := client.recv(65536):
            out += chunk
    except TimeoutError:
        raise AssertionError(f"the server did not close the connection within {timeout_s} s") from None
    return out


def read_answer(client: socket.socket) -> bytes:
    """One whole answer (head and Content-Length body) from a connection kept open."""
    client.settimeout(5)
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += _more(client, len(raw))
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(parse_head(head)[1]["content-length"])
    while len(body) < length:
        body += _more(client, len(head) + 4 + len(body))
    return head + b"\r\n\r\n" + body


def _more(client: socket.socket, received: int) -> bytes:
    chunk = client.recv(65536)
    if not chunk:
        raise AssertionError(f"the server closed the connection after {received} bytes of an answer")
    return chunk


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), dict(line.lower().split(": ", 1) for line in lines[1:])


def half_closed_answer(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request``, close our sending side (the client still reads), return the answer."""
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        raw = read_until_closed(client)
    head, _, body = raw.partition(b"\r\n\r\n")
    return (*parse_head(head), body)


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]

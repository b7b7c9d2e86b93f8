"""Broken and abandoned request bodies, and closed connections, over a real Hypercorn on loopback.

Raw sockets, because an HTTP client would not send a body shorter than its Content-Length, break
chunked framing or half-close. What the server must do: answer a client that can still read with a
400 in JSON naming the problem, count it as a 400 (never a 500) and log no traceback; and close a
connection the client has closed at once, not after the 75 s keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fnserve.runtime.app import create_app
from fnserve.runtime.loader import discover
from fnserve.runtime.server import bind_socket, serve
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings
from tests.support.rawhttp import assert_no_traceback, half_closed_answer, read_answer, read_until_closed

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"
POST = b"POST /function/double HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Runtime]]:
    """``(port, runtime)``: fn serve's server (Hypercorn with fnserve's settings) in a thread."""
    project = tmp_path_factory.mktemp("project")
    settings = Settings.from_mapping(project, {}, {}, {"store": f"file://{project}/store"})
    runtime = Runtime(discover([FNS / "double"]), settings)
    with serving_in_thread(runtime) as port:
        yield port, runtime


@contextlib.contextmanager
def serving_in_thread(runtime: Runtime) -> Iterator[int]:
    sock = bind_socket("127.0.0.1", 0)
    ready, box = threading.Event(), {}

    async def main() -> None:
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        await serve(create_app(runtime), runtime, sock, on_ready=ready.set, stop=box["stop"])

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the server did not become ready"
        yield sock.getsockname()[1]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        sock.close()


def counts(runtime: Runtime) -> tuple[float, float]:
    """The requests to ``double`` counted as 400 and as 500 so far."""

    def count(status: str) -> float:
        labels = {"function": "double", "status": status}
        return runtime.metrics.registry.get_sample_value("fnserve_requests_total", labels) or 0.0

    return count("400"), count("500")


def settled_counts(runtime: Runtime) -> tuple[float, float]:
    """``counts`` once the earlier tests' requests are all counted (none changed for 0.2 s)."""
    last = None
    while (now := counts(runtime)) != last:
        last = now
        time.sleep(0.2)
    return now


def test_a_body_shorter_than_its_content_length_is_a_400_naming_what_arrived(
    server: tuple[int, Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = server
    status, headers, body = half_closed_answer(port, POST + b'Content-Length: 20\r\n\r\n{"x": 4}')
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "error": "the request body ended after 8 of the 20 bytes its Content-Length declares"
    }
    assert_no_traceback(caplog)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", "chunked encoding is malformed (illegal chunk header)"),
        (b'8\r\n{"x": 4}XX0\r\n\r\n', "chunked encoding is malformed (malformed chunk footer)"),
        (b'3\r\n{"x', "the chunked request body ended before its last chunk"),
    ],
    ids=["bad size line", "bad chunk end", "cut before the last chunk"],
)
def test_broken_chunked_bodies_are_a_400_in_json(
    server: tuple[int, Runtime], caplog: pytest.LogCaptureFixture, body: bytes, named: str
) -> None:
    port, _ = server
    status, headers, answer = half_closed_answer(port, CHUNKED + body)
    assert status == 400 and headers["content-type"] == "application/json"
    assert named in json.loads(answer)["error"]
    assert_no_traceback(caplog)


def test_a_request_head_that_is_not_http_is_a_400_in_json(server: tuple[int, Runtime]) -> None:
    port, _ = server
    status, headers, body = half_closed_answer(port, b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "the request is not valid HTTP/1.1 (illegal header line)"}


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_a_client_gone_mid_body_is_counted_as_a_400_and_logs_no_traceback(
    server: tuple[int, Runtime], caplog: pytest.LogCaptureFixture, reset: bool
) -> None:
    port, runtime = server
    before = settled_counts(runtime)
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(POST + b'Content-Length: 2000\r\n\r\n{"x": ')
    time.sleep(0.2)  # the body has begun: the app is reading it
    if reset:  # SO_LINGER 0: the close sends RST instead of FIN
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    deadline = time.monotonic() + 5
    while counts(runtime) == before:
        assert time.monotonic() < deadline, "the request was never counted"
        time.sleep(0.02)
    time.sleep(0.1)  # anything it would log is logged by now
    after = counts(runtime)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)  # a 400, not a 500
    assert_no_traceback(caplog)


def test_a_connection_the_client_closed_after_its_answer_is_closed_at_once(
    server: tuple[int, Runtime],
) -> None:
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(client).startswith(b"HTTP/1.1 200")
        client.shutdown(socket.SHUT_WR)  # done: a keep-alive connection, closed by its client
        assert read_until_closed(client) == b""  # the server's FIN, not 75 s of CLOSE_WAIT


def test_a_half_closed_client_still_gets_its_answer_then_the_close(server: tuple[int, Runtime]) -> None:
    port, _ = server
    status, _, body = half_closed_answer(port, POST + b'Content-Length: 8\r\n\r\n{"x": 4}')
    assert status == 200 and json.loads(body) == {"predictions": [8.0]}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_connection_churn_leaves_no_descriptors_open(server: tuple[int, Runtime]) -> None:
    port, _ = server
    before = open_sockets()
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(client).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 2
    while (left := open_sockets() - before) > 0:
        assert time.monotonic() < deadline, f"{left} server-side connections still open after 2 s"
        time.sleep(0.02)


def open_sockets() -> int:
    """Sockets this process holds (the server runs in it; the clients above are closed)."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found += stat.S_ISSOCK(os.stat(f"/proc/self/fd/{fd}").st_mode)
    return found


def test_the_app_answers_a_disconnect_mid_body_with_a_400_naming_what_arrived(
    server: tuple[int, Runtime],
) -> None:
    """The app's own answer, as an ASGI server that does not answer first would deliver it."""
    _, runtime = server
    messages: list[Any] = [
        {"type": "http.request", "body": b'{"x": 4}', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0) if messages else await asyncio.Event().wait()

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/function/double",
        "raw_path": b"/function/double",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"20")],
    }
    asyncio.run(create_app(runtime)(scope, receive, send))
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {
        "error": "the request body ended after 8 of the 20 bytes its Content-Length declares"
    }

"""The gateway, like the runtime, over raw sockets: a broken or abandoned body is a 400 in JSON that
wakes no replica and logs no traceback, and a connection its client closed is closed at once.

No replica runs: the function is deployed with min_replicas 0 and a broken body must not wake it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.gateways import TOKEN, RunningGateway, deployment, running_gateway
from tests.support.rawhttp import (
    assert_no_traceback,
    half_closed_answer,
    parse_head,
    read_answer,
    read_until_closed,
)

IDLE = deployment("double", ("1", "double", 100, "latest"), min_replicas=0)
POST = b"POST /function/double HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("project"), [IDLE]) as running:
        yield running


def port(gw: RunningGateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def answered_400(gw: RunningGateway) -> float:
    labels = {"function": "double", "version": "1", "status": "400"}
    return gw.gateway.metrics.registry.get_sample_value("fnserve_gateway_requests_total", labels) or 0.0


@pytest.mark.parametrize(
    ("sent", "pause_s"),
    [(b"", 0.0), (b'{"x": 4}', 0.0), (b'{"x": 4}', 0.2)],
    ids=["no body byte", "8 bytes with the close", "8 bytes, then the close"],
)
def test_a_body_cut_short_is_a_400_that_wakes_no_replica(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture, sent: bytes, pause_s: float
) -> None:
    before = answered_400(gw)
    with socket.create_connection(("127.0.0.1", port(gw))) as client:
        client.sendall(POST + b"Content-Length: 20\r\n\r\n" + sent)
        time.sleep(pause_s)  # the body's start and the client's close: one read, or two
        client.shutdown(socket.SHUT_WR)
        raw = read_until_closed(client)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    expected = f"the request body ended after {len(sent)} of the 20 bytes its Content-Length declares"
    assert json.loads(body) == {"error": expected}
    deadline = time.monotonic() + 3
    while answered_400(gw) == before:  # the proxy has dealt with it (not forwarded, not held)
        assert time.monotonic() < deadline, "the proxy never answered the broken request"
        time.sleep(0.02)
    assert gw.status("double")["versions"][0]["desired"] == 0  # no replica woken for it
    assert gw.gateway.metrics.registry.get_sample_value("fnserve_gateway_cold_starts_total") in (None, 0)
    assert_no_traceback(caplog)


def test_a_broken_admin_body_is_a_400_without_a_traceback(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    request = (
        b"PUT /admin/functions/double HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 40\r\n\r\n".encode()
        + b'{"image": '
    )
    status, _, body = half_closed_answer(port(gw), request)
    assert status == 400
    assert json.loads(body)["error"] == (
        "the request body ended after 10 of the 40 bytes its Content-Length declares"
    )
    time.sleep(0.2)  # the app has met the disconnect by now
    assert_no_traceback(caplog)


def test_the_gateway_closes_a_connection_its_client_closed(gw: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", port(gw))) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(client).startswith(b"HTTP/1.1 200")
        client.shutdown(socket.SHUT_WR)
        assert read_until_closed(client) == b""


def test_an_answer_given_before_the_body_arrived_keeps_the_connection(gw: RunningGateway) -> None:
    """A 404 sent before the caller's body arrived (as a client writing head and body in two
    writes makes likely on a busy machine): the body is read before it goes out, and the
    connection serves on."""
    with socket.create_connection(("127.0.0.1", port(gw))) as client:
        client.sendall(b"POST /function/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
        time.sleep(0.2)  # the gateway knows its answer by now
        client.sendall(b'{"x": 4}')
        first = read_answer(client)
        client.sendall(b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        time.sleep(0.2)
        client.sendall(b"{}")
        second = read_answer(client)
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        third = read_answer(client)
    assert first.startswith(b"HTTP/1.1 404") and b"no function named 'nope'" in first
    assert second.startswith(b"HTTP/1.1 404")
    assert third.startswith(b"HTTP/1.1 200")


def test_a_body_too_large_to_read_is_refused_with_connection_close(gw: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", port(gw))) as client:
        client.sendall(POST + f"Content-Length: {128 * 1024 * 1024}\r\n\r\n".encode() + b"x" * 1000)
        head, _, _ = read_answer(client).partition(b"\r\n\r\n")
        rest = read_until_closed(client)
    status, headers = parse_head(head)
    assert status == 413 and headers["connection"] == "close"
    assert rest == b""  # and the server closed its side: the client's next request opens a new one

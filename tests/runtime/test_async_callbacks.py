"""Callbacks of asynchronous calls, against real HTTP listeners on loopback: delivered with the
status document, retried with backoff, recorded as failed when the URL never answers — while other
calls finish as if nothing happened — and delivered by the next process when one stopped owing it.
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.runtime.test_async_app import ASYNC, submit, wait_done

QUICK = {"async_callback_backoff_s": 0.01, "async_callback_timeout_s": 0.3, "async_scan_interval_s": 0.1}


class Hook:
    """A callback receiver: answers ``statuses`` in turn (then 200), keeps what it was sent."""

    def __init__(self, statuses: list[int] | None = None):
        self.statuses = collections.deque(statuses or [])
        self.received: list[tuple[dict[str, str], Any]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                hook.received.append((headers, orjson.loads(body)))
                status = hook.statuses.popleft() if hook.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/done"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Any]:
    made: list[Hook] = []

    def make(statuses: list[int] | None = None) -> Hook:
        made.append(Hook(statuses))
        return made[-1]

    yield make
    for h in made:
        h.close()


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A URL whose server takes the connection and never answers (nothing accepts it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/never"
    finally:
        sock.close()


def callback_state(client: Any, url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (doc := client.get(url).json()).get("callback", {}).get("status") in (None, "pending"):
        assert time.monotonic() < deadline, f"callback still pending: {doc}"
        time.sleep(0.02)
    return dict(doc["callback"])


def test_the_outcome_is_posted_to_the_callback(serve: Any, hook: Any) -> None:
    receiver = hook()
    with serve("double", **QUICK) as client:
        url = submit(client, "/function/double", json={"x": 3}, headers={"Callback-URL": receiver.url})
        state = callback_state(client, url)
        doc = client.get(url).json()
    assert state == {"status": "delivered", "attempts": 1}
    [(headers, sent)] = receiver.received
    assert headers["fnserve-call-id"] == doc["id"] and headers["content-type"] == "application/json"
    assert sent["id"] == doc["id"] and sent["status"] == "done" and sent["result"] == {"predictions": [6.0]}
    assert "callback" not in sent and receiver.url not in str(sent)


def test_a_failing_callback_is_retried_with_backoff(serve: Any, hook: Any) -> None:
    receiver = hook([503, 500])
    with serve("double", **QUICK) as client:
        url = submit(client, "/function/double", json={"x": 1}, headers={"Callback-URL": receiver.url})
        state = callback_state(client, url)
        metrics = client.get("/metrics").text
    assert state == {"status": "delivered", "attempts": 3} and len(receiver.received) == 3
    assert 'fnserve_async_callback_retries_total{function="double"} 2.0' in metrics


def test_a_callback_refused_for_good_is_not_tried_again(serve: Any, hook: Any) -> None:
    receiver = hook([404])
    with serve("double", **QUICK) as client:
        url = submit(client, "/function/double", json={"x": 1}, headers={"Callback-URL": receiver.url})
        state = callback_state(client, url)
    assert state == {"status": "failed", "attempts": 1, "error": "answered 404"}


def test_a_callback_that_never_answers_fails_without_holding_up_other_calls(serve: Any) -> None:
    settings = {**QUICK, "async_callback_attempts": 3, "async_callback_timeout_s": 0.5}
    with silent_listener() as never, serve("double", **settings) as client:
        stuck = submit(client, "/function/double", json={"x": 1}, headers={"Callback-URL": never})
        started = time.monotonic()
        others = [submit(client, "/function/double", json={"x": i}) for i in range(20)]
        done = [wait_done(client, url) for url in others]
        others_took_s = time.monotonic() - started
        assert client.get(stuck).json()["callback"] == {"status": "pending"}  # still trying meanwhile
        state = callback_state(client, stuck)
        final = client.get(stuck)
        metrics = client.get("/metrics").text
    assert [d["result"] for d in done] == [{"predictions": [2.0 * i]} for i in range(20)]
    assert others_took_s < 1.0  # well before the callback's three tries of 0.5 s each are over
    assert state == {"status": "failed", "attempts": 3, "error": "no answer within 0.5 s"}
    assert final.status_code == 200 and final.json()["status"] == "done"
    assert 'fnserve_async_callback_failures_total{function="double"} 1.0' in metrics


def test_a_callback_owed_by_a_stopped_process_is_delivered_by_the_next(serve: Any, hook: Any) -> None:
    refusing, receiver = hook([503] * 100), hook()
    slow = {**QUICK, "async_callback_backoff_s": 30.0}
    with serve("double", **slow) as client:
        url = submit(client, "/function/double", json={"x": 2}, headers={"Callback-URL": refusing.url})
        wait_done(client, url)
        deadline = time.monotonic() + 5
        while not refusing.received:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    # The receiver moved: the next process delivers to the URL given (a redirect by hand is a new
    # URL; here the same port now answers 200).
    refusing.statuses.clear()
    with serve("double", **QUICK) as client:
        state = callback_state(client, url)
    assert state == {"status": "delivered", "attempts": 1}
    assert receiver.received == [] and len(refusing.received) == 2


def test_callbacks_only_go_to_the_hosts_allowed(serve: Any) -> None:
    with serve("double", async_callback_hosts="*.hooks.example, 10.0.0.7") as client:
        refused = client.post(
            "/function/double", json={"x": 1}, headers={**ASYNC, "Callback-URL": "https://127.0.0.1/x"}
        )
        allowed = client.post(
            "/function/double", json={"x": 1}, headers={**ASYNC, "Callback-URL": "https://a.hooks.example/x"}
        )
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "Callback-URL: host '127.0.0.1' is not allowed here (callback_hosts: *.hooks.example, 10.0.0.7)"
    )
    assert allowed.status_code == 202

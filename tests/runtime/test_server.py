"""`fn serve` for real: a Hypercorn process on an ephemeral port, called over loopback."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.serving import Served, start_serve, stop

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = start_serve(tmp_path, FNS / "double", FNS / "slow")
    yield s
    stop(s)


def test_real_server_answers_predictions_and_health(served: Served) -> None:
    with httpx.Client(base_url=served.url) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["ready"] is True
        assert client.get("/function/double", params={"x": 21}).json() == {"predictions": [42.0]}
        bad = client.get("/function/double", params={"x": "many"})
        assert bad.status_code == 422 and "x" in bad.json()["error"]


def test_sigterm_drains_in_flight_requests_then_exits(served: Served) -> None:
    results: dict[str, httpx.Response] = {}

    def slow_call() -> None:
        results["slow"] = httpx.get(f"{served.url}/function/slow", params={"seconds": 1.5}, timeout=10)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.4)  # the slow request is now in flight
    started = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    readiness = httpx.get(f"{served.url}/readyz", timeout=5)
    caller.join(10)
    assert served.proc.wait(15) == 0
    assert readiness.status_code == 503 and readiness.json()["draining"] is True
    assert results["slow"].status_code == 200
    assert results["slow"].json() == {"predictions": [1.5]}
    assert time.monotonic() - started < 10


def test_serve_binds_loopback_by_default(tmp_path: Path) -> None:
    s = start_serve(tmp_path, FNS / "double")
    try:
        assert s.url.startswith("http://127.0.0.1:")
        s.proc.terminate()
        assert s.proc.wait(15) == 0
    finally:
        stop(s)


def serve_while(app: Any, sock: socket.socket, during: Callable[[], None] = lambda: None) -> None:
    """Serve ``app`` on ``sock`` as fn serve does (Hypercorn, fnserve's settings); once it is
    ready, run ``during`` in a thread, then stop."""
    import asyncio

    from fnserve.runtime.http import RequestContext
    from fnserve.runtime.server import serve_until_stopped

    async def main() -> None:
        done = asyncio.Event()

        async def ready() -> None:
            await asyncio.to_thread(during)
            done.set()

        await serve_until_stopped(
            RequestContext(app),
            sock,
            drain_timeout_s=1,
            begin_drain=lambda: None,
            until_ready=ready,
            stop=done,
        )

    asyncio.run(main())


def test_hypercorn_closes_only_its_own_copy_of_the_listening_socket() -> None:
    """Hypercorn closes the descriptor it serves on at shutdown; if that were the caller's own,
    the caller's later ``sock.close()`` would close whatever the process had opened under that
    number since (it once closed the Docker client's connection in the test session)."""
    import os

    from starlette.applications import Starlette

    from fnserve.runtime.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    open_before = set(os.listdir("/proc/self/fd"))
    serve_while(Starlette(), sock)
    assert os.fstat(sock.fileno())  # still the caller's, still open
    assert set(os.listdir("/proc/self/fd")) <= open_before, "Hypercorn's copy was left open"
    sock.close()


def test_hypercorn_takes_large_bodies_in_reads_over_64_kib() -> None:
    """Every read of a connection is a trip through h11 and an ASGI message; Hypercorn's own
    cap of 64 KiB per read made a 786 KB body 17 trips. This fails if Hypercorn stops reading
    its ``MAX_RECV``, which ``read_larger_chunks`` raises."""
    from fnserve.runtime.server import bind_socket

    body = b"x" * (4 * 1024 * 1024)
    sizes: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            sizes.append(len(message.get("body", b"")))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]

    def post() -> None:
        with socket.create_connection(("127.0.0.1", port)) as client:
            head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            client.sendall(head.encode() + body)
            assert client.recv(1024).startswith(b"HTTP/1.1 200")

    serve_while(app, sock, post)
    sock.close()
    assert sum(sizes) == len(body)
    assert max(sizes) > 64 * 1024, f"no read took over 64 KiB: {len(sizes)} messages"


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_servers_run_on_the_event_loop_the_settings_name(event_loop: str) -> None:
    import asyncio

    from fnserve.runtime.server import run
    from fnserve.runtime.settings import Settings

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    settings = Settings.load(FNS, {"FNSERVE_EVENT_LOOP": event_loop})
    assert run(loop_module(), settings.event_loop).startswith(event_loop)


def test_an_unknown_event_loop_is_refused_by_name() -> None:
    from fnserve.runtime.settings import Settings

    with pytest.raises(ValueError, match="event_loop must be 'uvloop' or 'asyncio', got 'trio'"):
        Settings.load(FNS, {"FNSERVE_EVENT_LOOP": "trio"})

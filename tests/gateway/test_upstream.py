"""The proxy's HTTP/1.1 client against a scripted server on loopback: framing, reuse, failures."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from fnserve.gateway.upstream import Pool, UpstreamError

Script = Callable[[bytes], list[bytes] | None]  # request -> chunks to send (None: hang up)


def aio(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[int, list[int]]]:
    """A server answering each request with ``script(request)``; yields (port, connections seen)."""
    connections: list[int] = []
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            body = await reader.readexactly(length) if length else b""
            chunks = script(head + body)
            if chunks is None:
                return
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0)
            sent = b"".join(chunks).lower()
            if b"connection: close" in sent or sent.startswith(b"http/1.0") or chunks[-1] == b"":
                return  # an empty last chunk: hang up now

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def ok(body: bytes, *extra: bytes) -> list[bytes]:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return [head + b"".join(extra) + b"\r\n", body]


@aio
async def test_content_length_answers_reuse_one_connection() -> None:
    seen: list[bytes] = []

    def script(request: bytes) -> list[bytes]:
        seen.append(request)
        return ok(b'{"predictions":[2.0]}')

    async with scripted(script) as (port, connections):
        pool = Pool("127.0.0.1", port)
        for _ in range(3):
            status, headers, body = await pool.request(
                b"POST", b"/function/f?a=1", [(b"x-a", b"1")], b'{"x":1}'
            )
            assert (status, body) == (200, b'{"predictions":[2.0]}')
        assert (b"content-type", b"application/json") in headers
        pool.close()
    assert len(connections) == 1
    assert seen[0].startswith(b"POST /function/f?a=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"x-a: 1\r\n" in seen[0] and b"content-length: 7\r\n" in seen[0] and seen[0].endswith(b'{"x":1}')


@aio
async def test_chunked_answers_with_trailers_and_split_reads() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    chunked = [head, b"5\r\nhel", b"lo\r\n6;x=y\r\n world\r\n", b"0\r\ntrailer: t\r\n\r\n"]
    async with scripted(lambda _: chunked) as (port, connections):
        pool = Pool("127.0.0.1", port)
        assert (await pool.request(b"GET", b"/", [], b""))[2] == b"hello world"
        assert (await pool.request(b"GET", b"/", [], b""))[2] == b"hello world"
        pool.close()
    assert len(connections) == 1


@aio
async def test_close_delimited_head_and_no_content_answers() -> None:
    answers = {
        b"/close": [b"HTTP/1.0 200 OK\r\n\r\nall of it"],
        b"/head": [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"],
        b"/none": [b"HTTP/1.1 204 No Content\r\n\r\n"],
    }
    async with scripted(lambda r: answers[r.split(b" ")[1]]) as (port, _):
        pool = Pool("127.0.0.1", port)
        assert await pool.request(b"GET", b"/close", [], b"") == (200, [], b"all of it")
        assert (await pool.request(b"HEAD", b"/head", [], b""))[::2] == (200, b"")
        assert (await pool.request(b"GET", b"/none", [], b""))[::2] == (204, b"")
        pool.close()


@aio
async def test_a_refused_connection_says_the_request_never_reached_the_replica() -> None:
    async with scripted(lambda _: None) as (port, _):
        pass  # closed: nothing listens there now
    with pytest.raises(UpstreamError) as caught:
        await Pool("127.0.0.1", port).request(b"POST", b"/", [], b"{}")
    assert caught.value.connected is False


@aio
async def test_a_replica_dying_mid_answer_says_the_request_reached_it() -> None:
    async with scripted(lambda _: [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nonly", b""]) as (port, _):
        with pytest.raises(UpstreamError) as caught:
            await Pool("127.0.0.1", port).request(b"GET", b"/", [], b"")
    assert caught.value.connected is True


@aio
async def test_a_kept_alive_connection_the_replica_closed_is_not_reused() -> None:
    async with scripted(lambda _: ok(b"1", b"connection: close\r\n")) as (port, connections):
        pool = Pool("127.0.0.1", port)
        await pool.request(b"GET", b"/", [], b"")
        await pool.request(b"GET", b"/", [], b"")
        assert not pool.idle
    assert len(connections) == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: many\r\n\r\n",
        b"HTTP/1.1 200\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
)
@aio
async def test_malformed_answers_are_errors_not_hangs(answer: bytes) -> None:
    async with scripted(lambda _: [answer]) as (port, _):
        with pytest.raises(UpstreamError, match=r"malformed|bad Content-Length"):
            async with asyncio.timeout(5):
                await Pool("127.0.0.1", port).request(b"GET", b"/", [], b"")


@aio
async def test_a_slow_replica_times_out() -> None:
    async with scripted(lambda _: [b"HTTP/1.1 200 OK\r\n"]) as (port, _):
        with pytest.raises(TimeoutError):
            await Pool("127.0.0.1", port, timeout_s=0.2).request(b"GET", b"/", [], b"")


@aio
async def test_a_pool_closed_mid_request_closes_that_connection_once_answered() -> None:
    async with scripted(lambda _: ok(b"1")) as (port, _):
        pool = Pool("127.0.0.1", port)
        going = asyncio.get_running_loop().create_task(pool.request(b"GET", b"/", [], b""))
        await asyncio.sleep(0)  # on its way: its connection is busy, not idle
        pool.close()  # a version removed while one of its requests is in flight
        assert (await going)[0] == 200
        assert not pool.idle  # not kept: nothing would close it later (ResourceWarning at collection)
        assert (await pool.request(b"GET", b"/", [], b""))[0] == 200  # a late request still works
        assert not pool.idle

"""A lean HTTP/1.1 keep-alive connection for the load generator (and ``fn batch --url``).

Why not httpx here: measured on loopback against ``fn serve``, an httpx request costs the client
~0.8 ms of CPU with one connection per pool, and ~5 ms with 64 connections sharing a pool, so
httpx, not the server, would set the numbers. This connection sends requests encoded once per
step and reads answers by ``Content-Length`` (or chunked), at ~0.05 ms of CPU each. It is for
load: what the answers mean is checked by the real client (:mod:`fnserve.client`) before the
sweep starts, and ``fn batch`` reads its answers with the client's own checks and retry policy.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlencode, urlsplit

from fnserve.client.core import Call, ClientError


def encode_request(url: str, call: Call, agent: str = "fn-bench") -> bytes:
    """The bytes of ``call`` as an HTTP/1.1 request to the server at ``url``.

    >>> encode_request("http://127.0.0.1:8080", Call("GET", "/function/double", {"x": "2"}))
    b'GET /function/double?x=2 HTTP/1.1\\r\\nHost: 127.0.0.1:8080\\r\\nUser-Agent: fn-bench\\r\\n\\r\\n'
    """
    parts = urlsplit(url)
    target = parts.path.rstrip("/") + call.path + (f"?{urlencode(call.params)}" if call.params else "")
    lines = [f"{call.method} {target} HTTP/1.1", f"Host: {parts.netloc}", f"User-Agent: {agent}"]
    lines += [f"{name}: {value}" for name, value in call.headers.items()]
    if call.content is not None:
        lines.append(f"Content-Length: {len(call.content)}")
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + (call.content or b"")


class Connection:
    """One keep-alive connection, opened on first use and again whenever the server closed it."""

    def __init__(self, url: str, timeout_s: float):
        parts = urlsplit(url)
        self.url, self.timeout_s = url, timeout_s
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send an encoded request; the answer's status and body. ClientError (status 0) when the
        server cannot be reached or does not answer within ``timeout_s``."""
        status, _, body = await self.exchange(raw)
        return status, body

    async def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """:meth:`request`, with the answer's headers (names and values lowercased)."""
        for reused in (self._streams is not None, False):
            try:
                async with asyncio.timeout(self.timeout_s):
                    reader, writer = self._streams or await self._connect()
                    writer.write(raw)
                    return await self._read(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self.close()
                if not reused:  # a fresh connection failed: the server is gone, not just idle-closed
                    raise ClientError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
            except TimeoutError:
                self.close()
                raise ClientError(f"no answer from {self.url} within {self.timeout_s:g} s") from None
            except OSError as exc:
                self.close()
                raise ClientError(f"cannot reach {self.url}: {exc}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._streams = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        return self._streams

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if "chunked" in headers.get("transfer-encoding", ""):
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.close()
        return status, headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append((await reader.readexactly(size + 2))[:-2])
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
        pass
    return b"".join(chunks)

"""``fnserve.AsyncClient``: the client for asyncio code, and the one that sends many requests best."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import pyarrow as pa

from fnserve.client import arrow, core
from fnserve.client.core import DEFAULT_URL, Call, ClientError, RetryPolicy

T = TypeVar("T")
R = TypeVar("R")


class AsyncClient:
    """Call served functions from asyncio code; same paths for ``fn serve``, a container or the gateway.

    >>> import asyncio
    >>> from fnserve import AsyncClient
    >>> async def main():                                             # doctest: +SKIP
    ...     async with AsyncClient("http://127.0.0.1:8080", concurrency=32) as client:
    ...         one = await client.predict("double", x=2.0)           # GET /function/double?x=2.0
    ...         rows = [{"x": float(i)} for i in range(10_000)]
    ...         many = await client.predict_many("double", rows, batch_size=256)  # 40 POSTs, 32 at a time
    ...         return one, many[:3]
    >>> asyncio.run(main())                                           # doctest: +SKIP
    (4.0, [0.0, 2.0, 4.0])

    ``concurrency`` bounds the requests in flight and sizes the keep-alive connection pool. Answers
    429/503 are retried after the server's ``Retry-After`` (``retries`` times, ``max_retry_wait_s``
    in all); any other error raises :class:`ClientError` with the status and the server's message,
    and an unreachable server or a timeout raises it with status 0.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        concurrency: int = 16,
        timeout_s: float = 60.0,
        retries: int = 3,
        max_retry_wait_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.url = url.rstrip("/")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(retries=retries, max_wait_s=max_retry_wait_s)
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout_s, limits=core.limits(concurrency), headers=dict(headers or {})
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def predict(self, function: str, /, **inputs: Any) -> Any:
        """One prediction: a GET with query parameters, or a JSON POST if an input will not fit one
        (an image's bytes, a nested tensor). ``function`` may pin a version: ``"recs@3"``."""
        return (await self._predictions(core.single_call(function, inputs)))[0]

    async def predict_batch(self, function: str, instances: Sequence[Mapping[str, Any]]) -> list[Any]:
        """One prediction per instance, in order, in one request."""
        return await self._predictions(core.batch_call(function, instances))

    async def predict_bytes(self, function: str, data: bytes, content_type: str, **params: Any) -> Any:
        """One prediction from a raw body (an image: ``image/jpeg``), other inputs in the query."""
        return (await self._predictions(core.bytes_call(function, data, content_type, params)))[0]

    async def predict_many(
        self,
        function: str,
        instances: Sequence[Mapping[str, Any]],
        *,
        batch_size: int = 1,
        concurrency: int | None = None,
    ) -> list[Any]:
        """One prediction per instance, in order: sent in chunks of ``batch_size`` instances (1: one
        request each, as :meth:`predict`), ``concurrency`` requests at a time (default: the client's).
        The first error cancels the requests still to go and is raised."""

        async def send(part: Sequence[Mapping[str, Any]]) -> list[Any]:
            call = core.single_call(function, part[0]) if batch_size == 1 else core.batch_call(function, part)
            return await self._predictions(call)

        parts = await self._parallel(send, list(core.chunks(instances, batch_size)), concurrency)
        return list(itertools.chain.from_iterable(parts))

    async def predict_arrow(
        self,
        function: str,
        data: arrow.Columns,
        *,
        batch_size: int | None = None,
        concurrency: int | None = None,
    ) -> pa.Table:
        """Predictions for a table of instances, sent and answered as Arrow IPC streams: one column per
        input in, one per output out (``prediction`` for a single value). With ``batch_size``, the
        table goes in slices of that many rows, ``concurrency`` at a time, reassembled in order."""
        table = arrow.to_table(data)

        async def send(part: pa.Table) -> pa.Table:
            call = arrow.arrow_call(function, part)
            return arrow.read_answer(await self.send(call), call.expected)

        parts = arrow.slices(table, batch_size) if batch_size else [table]
        return arrow.concat(await self._parallel(send, parts, concurrency))

    async def functions(self) -> list[dict[str, Any]]:
        """The served functions: names, input schemas, versions (``GET /functions``)."""
        return list(core.json_body(await self.send(Call("GET", "/functions")))["functions"])

    async def submit(
        self,
        function: str,
        instances: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        callback_url: str | None = None,
    ) -> str:
        """Submit an asynchronous call (one instance, or a list); its id once the server stored it."""
        return core.accepted_id(await self.send(core.submit_call(function, instances, callback_url)))

    async def status(self, call_id: str) -> dict[str, Any]:
        """A call's status document: ``pending``, ``running``, ``done`` or ``failed``, and its result."""
        return dict(core.json_body(await self.send(Call("GET", core.call_path(call_id)))))

    async def result(self, call_id: str, *, timeout_s: float | None = None, poll_s: float = 0.2) -> list[Any]:
        """Wait for a call and return its predictions; as :meth:`fnserve.Client.result`."""
        async with asyncio.timeout(timeout_s):
            while (found := core.call_outcome(await self.status(call_id))) is None:
                await asyncio.sleep(poll_s)
        return found

    async def send(self, call: Call) -> httpx.Response:
        """Send a prepared :class:`~fnserve.client.core.Call`, retrying overloaded answers; the
        successful answer, else :class:`ClientError`."""
        waited = 0.0
        for attempt in itertools.count():
            response = await self._request(call)
            status, header = response.status_code, response.headers.get("retry-after")
            wait = self.retry.wait_s(status, header, attempt, waited)
            if wait is None:
                return core.check(response, attempt + 1)
            await asyncio.sleep(wait)
            waited += wait
        raise AssertionError("unreachable")

    async def _request(self, call: Call) -> httpx.Response:
        try:
            return await self._http.request(
                call.method, call.path, params=call.params or None, content=call.content, headers=call.headers
            )
        except httpx.TransportError as exc:
            raise ClientError(core.transport_message(self.url, exc, self.timeout_s)) from None

    async def _parallel(
        self, send: Callable[[T], Awaitable[R]], parts: list[T], concurrency: int | None
    ) -> list[R]:
        """``send`` each part, at most ``concurrency`` at once; the results in order."""
        results: list[Any] = [None] * len(parts)
        todo = enumerate(parts)

        async def worker() -> None:
            for i, part in todo:  # one shared iterator: each part goes to exactly one worker
                results[i] = await send(part)

        workers = [
            asyncio.ensure_future(worker()) for _ in range(min(concurrency or self.concurrency, len(parts)))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
        return results

    async def _predictions(self, call: Call) -> list[Any]:
        return core.predictions(core.json_body(await self.send(call)), call.expected)

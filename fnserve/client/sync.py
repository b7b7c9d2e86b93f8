"""``fnserve.Client``: the blocking client, for scripts, notebooks and ``fn invoke``."""

from __future__ import annotations

import itertools
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pyarrow as pa

from fnserve.client import arrow, core
from fnserve.client.core import DEFAULT_URL, Call, ClientError, RetryPolicy

T = TypeVar("T")
R = TypeVar("R")


class Client:
    """Call served functions; same paths for ``fn serve``, a container or the gateway.

    >>> from fnserve import Client
    >>> with Client("http://127.0.0.1:8080") as client:                       # doctest: +SKIP
    ...     client.predict("double", x=2.0)                  # GET /function/double?x=2.0
    ...     client.predict_batch("double", [{"x": 1}, {"x": 2}])      # one POST {"instances": [...]}
    ...     client.predict_many("double", [{"x": i} for i in range(1000)], batch_size=100)
    ...     client.predict_bytes("tagger", open("photo.jpg", "rb").read(), "image/jpeg")
    4.0
    [2.0, 4.0]
    [0.0, 2.0, ...]
    {'balcony': 0.97, ...}

    ``concurrency`` is how many requests :meth:`predict_many` keeps in flight (threads sharing one
    keep-alive connection pool of that size). Answers 429/503 are retried after the server's
    ``Retry-After`` (``retries`` times, ``max_retry_wait_s`` in all); any other error raises
    :class:`ClientError` with the status and the server's message, and an unreachable server or a
    timeout raises it with status 0. For asyncio code use :class:`fnserve.AsyncClient`.
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
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout_s, limits=core.limits(concurrency), headers=dict(headers or {})
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def predict(self, function: str, /, **inputs: Any) -> Any:
        """One prediction: a GET with query parameters, or a JSON POST if an input will not fit one
        (an image's bytes, a nested tensor). ``function`` may pin a version: ``"recs@3"``."""
        return self._predictions(core.single_call(function, inputs))[0]

    def predict_batch(self, function: str, instances: Sequence[Mapping[str, Any]]) -> list[Any]:
        """One prediction per instance, in order, in one request."""
        return self._predictions(core.batch_call(function, instances))

    def predict_bytes(self, function: str, data: bytes, content_type: str, **params: Any) -> Any:
        """One prediction from a raw body (an image: ``image/jpeg``), other inputs in the query."""
        return self._predictions(core.bytes_call(function, data, content_type, params))[0]

    def predict_many(
        self,
        function: str,
        instances: Sequence[Mapping[str, Any]],
        *,
        batch_size: int = 1,
        concurrency: int | None = None,
    ) -> list[Any]:
        """One prediction per instance, in order: sent in chunks of ``batch_size`` instances (1: one
        request each, as :meth:`predict`), ``concurrency`` requests at a time (default: the client's).
        The first error cancels the requests not yet sent and is raised."""

        def send(part: Sequence[Mapping[str, Any]]) -> list[Any]:
            call = core.single_call(function, part[0]) if batch_size == 1 else core.batch_call(function, part)
            return self._predictions(call)

        parts = self._parallel(send, list(core.chunks(instances, batch_size)), concurrency)
        return list(itertools.chain.from_iterable(parts))

    def predict_arrow(
        self,
        function: str,
        data: arrow.Columns,
        *,
        batch_size: int | None = None,
        concurrency: int | None = None,
    ) -> pa.Table:
        """Predictions for a table of instances, sent and answered as Arrow IPC streams: one column per
        input in, one per output out (``prediction`` for a single value). With ``batch_size``, the
        table goes in slices of that many rows, ``concurrency`` at a time, reassembled in order.

        >>> client.predict_arrow("double", {"x": np.arange(100_000.0)}, batch_size=10_000)  # doctest: +SKIP
        pyarrow.Table
        prediction: double
        """
        table = arrow.to_table(data)

        def send(part: pa.Table) -> pa.Table:
            call = arrow.arrow_call(function, part)
            return arrow.read_answer(self.send(call), call.expected)

        parts = arrow.slices(table, batch_size) if batch_size else [table]
        return arrow.concat(self._parallel(send, parts, concurrency))

    def functions(self) -> list[dict[str, Any]]:
        """The served functions: names, input schemas, versions (``GET /functions``)."""
        return list(core.json_body(self.send(Call("GET", "/functions")))["functions"])

    def submit(
        self,
        function: str,
        instances: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        callback_url: str | None = None,
    ) -> str:
        """Submit an asynchronous call: one instance (a mapping) or a batch (a list); returns its id
        as soon as the server has stored it. ``callback_url``: where its outcome is POSTed.

        >>> call = client.submit("recs", {"user_country": "NL", "hotel_id": 991})  # doctest: +SKIP
        >>> client.result(call)                                                   # doctest: +SKIP
        [0.93]
        """
        return core.accepted_id(self.send(core.submit_call(function, instances, callback_url)))

    def status(self, call_id: str) -> dict[str, Any]:
        """A call's status document: ``pending``, ``running``, ``done`` or ``failed``, and its result."""
        return dict(core.json_body(self.send(Call("GET", core.call_path(call_id)))))

    def result(self, call_id: str, *, timeout_s: float | None = None, poll_s: float = 0.2) -> list[Any]:
        """Wait for a call and return its predictions (one per instance submitted); a failed call
        raises :class:`ClientError` with the function's status and message, and ``TimeoutError``
        comes after ``timeout_s`` (None: wait as long as it takes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (found := core.call_outcome(self.status(call_id))) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"call {call_id} did not finish within {timeout_s:g} s")
            time.sleep(poll_s)
        return found

    def monitor(self, function: str | None = None) -> dict[str, Any]:
        """Live drift against the training reference, per function, version and feature
        (``GET /monitor`` or ``GET /monitor/{function}``)."""
        path = "/monitor" if function is None else f"/monitor/{urllib.parse.quote(function, safe='')}"
        return dict(core.json_body(self.send(Call("GET", path))))

    def send(self, call: Call) -> httpx.Response:
        """Send a prepared :class:`~fnserve.client.core.Call`, retrying overloaded answers; the
        successful answer, else :class:`ClientError`."""
        waited = 0.0
        for attempt in itertools.count():
            response = self._request(call)
            status, header = response.status_code, response.headers.get("retry-after")
            wait = self.retry.wait_s(status, header, attempt, waited)
            if wait is None:
                return core.check(response, attempt + 1)
            time.sleep(wait)
            waited += wait
        raise AssertionError("unreachable")

    def _request(self, call: Call) -> httpx.Response:
        try:
            return self._http.request(
                call.method, call.path, params=call.params or None, content=call.content, headers=call.headers
            )
        except httpx.TransportError as exc:
            raise ClientError(core.transport_message(self.url, exc, self.timeout_s)) from None

    def _parallel(self, send: Callable[[T], R], parts: list[T], concurrency: int | None) -> list[R]:
        """``send`` each part from at most ``concurrency`` threads; the results in order."""
        if len(parts) <= 1:
            return [send(part) for part in parts]
        with ThreadPoolExecutor(min(concurrency or self.concurrency, len(parts))) as pool:
            futures = [pool.submit(send, part) for part in parts]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _predictions(self, call: Call) -> list[Any]:
        return core.predictions(core.json_body(self.send(call)), call.expected)

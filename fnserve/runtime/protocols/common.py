"""What every protocol's prediction route shares: error answers, metrics, disconnects."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from fnserve.runtime.codec import Inputs
from fnserve.runtime.errors import FnError
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.http import error_response, json_response
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.service import Runtime

log = logging.getLogger("fnserve.app")

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")
CLIENT_GONE = 499  # nginx's code for "the client closed the connection": counted, never sent


class ClientGone(FnError):
    status = CLIENT_GONE


def endpoint(handler: Handler) -> Handler:
    """Runtime errors become JSON answers; server-side ones carry the request id, not details."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except FnError as exc:
            if exc.status >= 500 and exc.status not in (503, 504):
                request_id = request.state.request_id
                log.error("request %s: %s", request_id, exc.message)
                return json_response({"error": f"{exc.message} (request id {request_id})"}, exc.status)
            return error_response(exc)

    return guarded


class observed:
    """Count the request by status and time it, whatever way it ends.

    A class, not ``@contextlib.contextmanager``: it wraps every prediction, and a generator-based
    context manager costs several times more per use.
    """

    __slots__ = ("function", "runtime", "started")

    def __init__(self, runtime: Runtime, function: str):
        self.runtime, self.function = runtime, function

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        status = 200 if kind is None else exc.status if isinstance(exc, FnError) else 500
        self.runtime.metrics.observe_request(self.function, status, time.perf_counter() - self.started)


async def predict(request: Request, runtime: Runtime, fn: ServedFunction, columns: Inputs, n: int) -> Outputs:
    """Run the rows; if the caller disconnects first, its queued work is dropped."""
    return await cancel_on_disconnect(request, runtime.predict(fn, columns, n))


WATCH_AFTER_S = 0.005  # answers faster than this never pay for a disconnect watcher


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` in this task; a disconnect seen meanwhile cancels it (dropping queued work).

    The watcher starts only once the work has taken ``WATCH_AFTER_S``: most answers come sooner,
    and a task per request is a measurable share of a fast prediction's cost.
    """
    current = asyncio.current_task()
    assert current is not None
    loop = asyncio.get_running_loop()
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        # The body was read already (or there is none): the next message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        current.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            raise ClientGone("the client disconnected before the answer was ready") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


def version_header(version: int | None) -> dict[str, str] | None:
    return {"X-Model-Version": str(version)} if version is not None else None

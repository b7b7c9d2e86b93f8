"""Callbacks: the outcome of a call POSTed to the URL its caller gave, retried with backoff.

A callback URL is given in the ``Callback-URL`` header of the call. It is checked when the call is
accepted (http or https, a host, at most 2,048 characters, and one of ``callback_hosts`` when that
setting names any) and then treated as a secret: it may carry a token in its path or query, so no
answer, status or log line shows it.

Delivery is at least once: a POST of the call's status document (``Fnserve-Call-Id`` names the call,
so a receiver can drop a repeat), tried ``callback_attempts`` times, ``callback_backoff_s`` doubling
between tries; a 2xx answer is delivered; 408, 425, 429, 5xx and no answer are tried again; another
4xx ends it. It is then recorded as failed (``fnserve_async_callback_failures``). Each delivery is
its own task, with a bounded number of POSTs in flight: a callback that never answers holds one of
those slots for ``callback_timeout_s`` per try, and never a call's run.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

from fnserve.runtime.asynccalls.metrics import CallMetrics
from fnserve.runtime.asynccalls.settings import AsyncSettings
from fnserve.runtime.errors import BadRequest
from fnserve.runtime.redact import redact_text, redact_url, secret_values

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("fnserve.async")

HEADER = "callback-url"
MAX_URL_CHARS = 2048
PARALLEL_POSTS = 32  # callback POSTs in flight at once, per process
RETRIED_ANSWERS = frozenset({408, 425, 429})

Record = Callable[[str, str, str, bytes], Awaitable[None]]  # (function, key, state, detail)


def check_callback(url: str, hosts: tuple[str, ...] = ()) -> str:
    """``url`` if a callback may be sent there, else a 400 saying why (the URL shown redacted).

    >>> check_callback("https://hooks.example/done?token=abc")
    'https://hooks.example/done?token=abc'
    >>> check_callback("ftp://files.example/x")
    Traceback (most recent call last):
    fnserve.runtime.errors.BadRequest: Callback-URL: 'ftp://files.example/x' is not an http(s) URL
    >>> check_callback("https://evil.example/", ("*.corp.example",))
    Traceback (most recent call last):
    fnserve.runtime.errors.BadRequest: Callback-URL: host 'evil.example' is not allowed here ...
    """
    shown = redact_url(url)[:200]
    if len(url) > MAX_URL_CHARS:
        raise BadRequest(f"Callback-URL: longer than {MAX_URL_CHARS} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise BadRequest("Callback-URL: holds spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise BadRequest(f"Callback-URL: {shown!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"Callback-URL: {shown!r} is not an http(s) URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise BadRequest(f"Callback-URL: {shown!r} names no host")
    if hosts and not any(fnmatch.fnmatchcase(host, pattern) for pattern in hosts):
        raise BadRequest(
            f"Callback-URL: host {host!r} is not allowed here (callback_hosts: {', '.join(hosts)})"
        )
    return url


class Callbacks:
    """Deliveries in flight; ``record(function, key, state, detail)`` notes each one's end."""

    def __init__(self, settings: AsyncSettings, metrics: CallMetrics, record: Record):
        self.settings = settings
        self.metrics = metrics
        self._record = record
        self._http: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(PARALLEL_POSTS)
        self._busy: dict[tuple[str, str], asyncio.Task[None]] = {}

    def busy(self, function: str, key: str) -> bool:
        return (function, key) in self._busy

    def deliver(self, function: str, key: str, call_id: str, url: str, document: object) -> None:
        """Start delivering ``document`` to ``url`` (once per call at a time); returns at once."""
        if (function, key) in self._busy:
            return
        body = orjson.dumps(document)
        task = asyncio.get_running_loop().create_task(self._deliver(function, key, call_id, url, body))
        self._busy[(function, key)] = task
        task.add_done_callback(lambda _: self._busy.pop((function, key), None))

    async def stop(self) -> None:
        """Stop delivering: a delivery cut short stays pending and starts again with the next process."""
        tasks = list(self._busy.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _deliver(self, function: str, key: str, call_id: str, url: str, body: bytes) -> None:
        settings = self.settings
        why = ""
        tries = 0
        for tries in range(1, settings.callback_attempts + 1):
            async with self._slots:
                delivered, final, why = await self._post(url, body, call_id)
            if delivered:
                self.metrics.callbacks.labels(function).inc()
                await self._record(function, key, "delivered", orjson.dumps({"attempts": tries}))
                return
            if final:
                break
            if tries < settings.callback_attempts:
                self.metrics.callback_retries.labels(function).inc()
                await asyncio.sleep(settings.callback_backoff_s * 2 ** (tries - 1))
        self.metrics.callback_failures.labels(function).inc()
        log.warning("call %s: its callback failed after %d tries: %s", call_id, tries, why)
        await self._record(function, key, "failed", orjson.dumps({"attempts": tries, "error": why}))

    async def _post(self, url: str, body: bytes, call_id: str) -> tuple[bool, bool, str]:
        """``(delivered, no use trying again, what happened)`` for one try."""
        import httpx  # here, not at the top: importing it imports click and rich (its CLI's), which a
        #   replica that sends no callback need not hold

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.callback_timeout_s, follow_redirects=False)
        headers = {"content-type": "application/json", "fnserve-call-id": call_id, "user-agent": "fnserve"}
        try:
            answer = await self._http.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return False, False, f"no answer within {self.settings.callback_timeout_s:g} s"
        except httpx.HTTPError as exc:
            said = redact_text(
                (str(exc) or type(exc).__name__).replace(url, "<callback URL>"), secret_values(url)
            )
            return False, False, f"could not be reached: {type(exc).__name__}: {said}"
        status = answer.status_code
        if 200 <= status < 300:
            return True, True, f"answered {status}"
        final = 400 <= status < 500 and status not in RETRIED_ANSWERS
        return False, final, f"answered {status}"

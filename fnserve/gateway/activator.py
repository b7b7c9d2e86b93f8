"""Scale from zero: hold a request until its version has a ready replica, wake the version up,
and measure the cold start in its parts.

A request for a version with no routable replica waits here (at most ``hold_timeout_s``, at
most ``hold_queue`` per function) while one waker per version asks the platform for replicas
and polls until one is ready; then every held request goes on, so the caller sees a slow answer
rather than an error. Past the queue bound the answer is 429, past the wait 503, both with
``Retry-After``. The 503 says why the version is not ready when anyone can tell: a replica's
own ``/readyz`` (the first line of its failing load's error), else the platform's
``last_failure`` (the last words of a replica that exited before it was ready).

The cold start's parts: ``start`` — from the scale request until the runtime process was up
(its ``started_at`` in ``GET /functions``: container or process start, interpreter, function
import), ``fetch`` — the checkpoint download, ``load`` — the model load (both from the runtime's
``fetch_s``/``model_load_s``), and ``total`` — until the gateway saw the replica ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from fnserve.gateway.balancer import Endpoint
from fnserve.gateway.platform import PlatformError
from fnserve.gateway.routing import FunctionRoute, VersionRoute
from fnserve.gateway.upstream import UpstreamError
from fnserve.runtime.errors import FnError, NotFound, Overloaded, first_line
from fnserve.runtime.redact import redact_text

if TYPE_CHECKING:
    from fnserve.gateway.service import Gateway

log = logging.getLogger("fnserve.gateway")
WHY_TTL_S = 1.0  # requests timing out within this of each other share one "why not ready"
WHY_TIMEOUT_S = 2.0  # the longest a timed-out request waits longer to learn why


class VersionGone(FnError):
    """The version a held request waited for was removed (a rolled-back candidate): the proxy
    sends the request by the function's current split instead."""

    status = 503


async def hold(gateway: Gateway, route: FunctionRoute, version: VersionRoute) -> Endpoint:
    """Wait for a routable replica of ``version`` (waking it if it has none); return it."""
    stats, options = route.stats, gateway.options
    if stats.held >= options.hold_queue:
        raise Overloaded(
            f"{route.name}@{version.label} is starting and holds {stats.held} requests; retry shortly",
            status=429,
            retry_after_s=2,
        )
    stats.held += 1
    wake(gateway, route, version)
    try:
        async with asyncio.timeout(options.hold_timeout_s):
            while True:
                await version.routable.wait()
                current = gateway.functions.get(route.name)
                if current is None:
                    raise NotFound(f"function {route.name!r} was deleted while the request waited")
                if current.versions.get(version.label) is not version:
                    raise VersionGone(f"{route.name}@{version.label} was removed while the request waited")
                endpoint = version.balancer.pick()
                if endpoint is not None:
                    return endpoint
                await asyncio.sleep(gateway.options.poll_s)
    except TimeoutError:
        reason = redact_text(await why_not_ready(gateway, route, version))  # a log line may quote a URL
        raise Overloaded(
            f"no replica of {route.name}@{version.label} became ready within {options.hold_timeout_s:g} s"
            + (f": {reason}" if reason else "")
            + f"; see `fn logs {route.name}`",
            status=503,
            retry_after_s=5,
        ) from None
    finally:
        stats.held -= 1


async def why_not_ready(gateway: Gateway, route: FunctionRoute, version: VersionRoute) -> str:
    """Why ``version`` has no ready replica, in one line, or "" when nobody can say.

    Held requests time out together: they share one inquiry, asked again after ``WHY_TTL_S``.
    """
    now = time.monotonic()
    asked = version.why
    if asked is None or (asked.done() and now - version.why_asked_at > WHY_TTL_S):
        version.why_asked_at = now
        asked = version.why = asyncio.get_running_loop().create_task(_ask_why(gateway, route, version))
    return await asyncio.shield(asked)


async def _ask_why(gateway: Gateway, route: FunctionRoute, version: VersionRoute) -> str:
    try:
        async with asyncio.timeout(WHY_TIMEOUT_S):
            for replica in version.replicas:
                if replica.url and not replica.ready and not replica.draining:
                    reason = await _readyz_reason(gateway, replica.url, route.name)
                    if reason:
                        return reason
            last_failure = getattr(gateway.platform, "last_failure", None)  # optional (local target)
            if callable(last_failure):
                said = await gateway.call(last_failure, route.name, version.label)
                return first_line(said) if isinstance(said, str) else ""
    except Exception:  # the reason is a courtesy: never fail the answer over it
        log.debug("%s@%s: could not learn why it is not ready", route.name, version.label, exc_info=True)
    return ""


async def _readyz_reason(gateway: Gateway, url: str, function: str) -> str:
    """The first line of the load error a replica's ``/readyz`` reports, or "" if it reports none."""
    pool = gateway.pool_for(url)
    try:
        status, _, body = await pool.request(b"GET", b"/readyz", [], b"")
        errors = orjson.loads(body).get("errors") if status == 503 else None
    except (UpstreamError, PlatformError, orjson.JSONDecodeError, AttributeError):
        return ""
    finally:
        pool.close()
    if not isinstance(errors, dict) or not errors:
        return ""
    said = errors.get(function, next(iter(errors.values())))
    return first_line(said) if isinstance(said, str) else ""


def wake(gateway: Gateway, route: FunctionRoute, version: VersionRoute) -> None:
    """Start the version's waker unless one runs already."""
    if version.waker is None or version.waker.done():
        version.waker = asyncio.get_running_loop().create_task(_wake(gateway, route, version))


async def _wake(gateway: Gateway, route: FunctionRoute, version: VersionRoute) -> None:
    began, began_wall = time.monotonic(), time.time()
    cold = version.desired == 0
    try:
        if cold:
            await gateway.scale(route, version, max(1, route.floor(version.label)))
        deadline = began + gateway.options.hold_timeout_s
        while not version.balancer.endpoints and time.monotonic() < deadline:
            current = gateway.functions.get(route.name)
            if current is None or current.versions.get(version.label) is not version:
                return
            await gateway.refresh(current)
            if not version.balancer.endpoints:
                await asyncio.sleep(gateway.options.poll_s)
        if cold and version.balancer.endpoints:
            await _record_cold_start(gateway, route, version, time.monotonic() - began, began_wall)
    except Exception:
        log.exception("%s@%s: waking it up failed", route.name, version.label)


async def _record_cold_start(
    gateway: Gateway, route: FunctionRoute, version: VersionRoute, total_s: float, began_wall: float
) -> None:
    parts = {"total": total_s, **await _runtime_parts(route.name, version, began_wall)}
    for part, seconds in parts.items():
        gateway.metrics.cold_start_seconds.labels(route.name, part).observe(seconds)
    gateway.metrics.cold_starts.labels(route.name, version.label).inc()
    route.stats.last_cold_start = {
        "version": version.label,
        "at": round(time.time(), 3),
        **{f"{part}_s": round(seconds, 3) for part, seconds in parts.items()},
    }
    shown = ", ".join(f"{part} {seconds:.2f}s" for part, seconds in parts.items())
    log.info("%s@%s: cold start %s", route.name, version.label, shown)


async def _runtime_parts(function: str, version: VersionRoute, began_wall: float) -> dict[str, float]:
    """The parts only the replica knows, from its ``GET /functions``; {} if it cannot say."""
    endpoint = version.balancer.pick()
    if endpoint is None:
        return {}
    try:
        async with asyncio.timeout(5):
            status, _, body = await endpoint.pool.request(b"GET", b"/functions", [], b"")
        info: Any = orjson.loads(body) if status == 200 else {}
        entry = next(f for f in info["functions"] if f.get("name") == function)
        return {
            "start": max(0.0, float(info["started_at"]) - began_wall),
            "fetch": float(entry.get("fetch_s") or 0.0),
            "load": float(entry.get("model_load_s") or 0.0),
        }
    except (
        UpstreamError,
        TimeoutError,
        orjson.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        StopIteration,
    ):
        log.debug("%s@%s: the replica did not describe its start", function, version.label)
        return {}

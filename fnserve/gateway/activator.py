"""Scale from zero: hold a request until its version has a ready replica, wake the version up,
and measure the cold start in its parts.

A request for a version with no routable replica waits here (at most ``hold_timeout_s``, at
most ``hold_queue`` per function) while one waker per version asks the platform for replicas
and polls until one is ready; then every held request goes on, so the caller sees a slow answer
rather than an error. Past the queue bound the answer is 429, past the wait 503, both with
``Retry-After``. The 503 says why the version is not ready when anyone can tell: a replica's
own ``/readyz`` (the first line of its failing load's error), else the platform's
``last_failure`` (the last words of a replica that exited before it was ready).

The cold start's parts (:func:`cold_start_parts`, from the replica's own start timeline in ``GET
/functions``): ``start`` (a process or container started, or a warm pool's standby claimed),
``import``, ``fetch``, ``framework``, ``load``, ``warm_up``, ``other``, ``ready`` (the gateway
learning it: a long poll of the replica's ``/readyz?wait_s=``, not a polling interval) and
``first_answer``; ``total`` is the scale request until the first held request's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
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
LONG_POLL_S = 10.0  # a starting replica's /readyz?wait_s= is held this long at most
FIRST_ANSWER_WAIT_S = 30.0  # a cold start's record waits this long for its first answer
_RECORDING: set[asyncio.Task[None]] = set()  # cold starts waiting for their first answer


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
            slow = ""  # the part a start is still in, when no replica failed
            for replica in version.replicas:
                if replica.url and not replica.ready and not replica.draining:
                    reason, doing = await _readyz_reason(gateway, replica.url, route.name)
                    if reason:
                        return reason
                    slow = slow or doing
            last_failure = getattr(gateway.platform, "last_failure", None)  # optional (local target)
            if callable(last_failure):
                said = await gateway.call(last_failure, route.name, version.label)
                if isinstance(said, str) and said:
                    return first_line(said)
            if slow:
                return f"its replica is still {slow}"
            if any(not r.url for r in version.replicas) or (version.desired and not version.replicas):
                return "no replica listens yet: its process or container is still starting"
    except Exception:  # the reason is a courtesy: never fail the answer over it
        log.debug("%s@%s: could not learn why it is not ready", route.name, version.label, exc_info=True)
    return ""


async def _readyz_reason(gateway: Gateway, url: str, function: str) -> tuple[str, str]:
    """From a replica's ``/readyz``: the first line of the load error it reports, and what its
    load is doing now (e.g. "loading the model of version 3 (for 41.0 s)"); "" for either it
    does not report."""
    pool = gateway.pool_for(url)
    try:
        status, _, body = await pool.request(b"GET", b"/readyz", [], b"")
        said = orjson.loads(body) if status == 503 else {}
        errors, loading = said.get("errors"), said.get("loading")
    except (UpstreamError, PlatformError, orjson.JSONDecodeError, AttributeError):
        return "", ""
    finally:
        pool.close()
    return _one(errors, function), _one(loading, function)


def _one(said: Any, function: str) -> str:
    """The function's entry of a per-function mapping (or the first), as one line."""
    if not isinstance(said, dict) or not said:
        return ""
    value = said.get(function, next(iter(said.values())))
    return first_line(value) if isinstance(value, str) else ""


def wake(gateway: Gateway, route: FunctionRoute, version: VersionRoute) -> None:
    """Start the version's waker unless one runs already."""
    if version.waker is None or version.waker.done():
        version.waker = asyncio.get_running_loop().create_task(_wake(gateway, route, version))


async def _wake(gateway: Gateway, route: FunctionRoute, version: VersionRoute) -> None:
    began, began_wall = time.monotonic(), time.time()
    cold = version.desired == 0
    try:
        if cold:
            version.cold_start = None
            await gateway.scale(route, version, max(1, route.floor(version.label)))
        deadline = began + gateway.options.hold_timeout_s
        while not version.balancer.endpoints and time.monotonic() < deadline:
            current = gateway.functions.get(route.name)
            if current is None or current.versions.get(version.label) is not version:
                return
            await gateway.refresh(current)
            if not version.balancer.endpoints:
                await _until_ready(gateway, version, deadline)
        if cold and version.balancer.endpoints:
            pending = version.cold_start = ColdStart(began, began_wall, time.monotonic(), time.time())
            task = asyncio.get_running_loop().create_task(
                _record_cold_start(gateway, route, version, pending)
            )
            _RECORDING.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(_RECORDING.discard)
    except Exception:
        log.exception("%s@%s: waking it up failed", route.name, version.label)


async def _until_ready(gateway: Gateway, version: VersionRoute, deadline: float) -> None:
    """Return when a starting replica of ``version`` says it is ready: its ``/readyz?wait_s=`` answers
    the moment it is (no polling interval on the critical path). Without a replica that has an
    address yet (a process still starting), a short pause instead."""
    starting = [r for r in version.replicas if r.url and not r.ready and not r.draining]
    if not starting:
        await asyncio.sleep(gateway.options.poll_s)
        return
    pool = gateway.pool_for(starting[0].url)
    wait_s = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
    began, status = time.monotonic(), 0
    try:
        async with asyncio.timeout(wait_s + 2):
            status, _, _ = await pool.request(b"GET", f"/readyz?wait_s={wait_s:.1f}".encode(), [], b"")
    except (UpstreamError, TimeoutError):
        pass
    finally:
        pool.close()
    if status != 200 and time.monotonic() - began < gateway.options.poll_s:  # refused, or said no at once
        await asyncio.sleep(gateway.options.poll_s)


class ColdStart:
    """A version's wake-up from zero, until its first answer (:func:`answered`)."""

    def __init__(self, began: float, began_wall: float, ready_seen: float, ready_seen_wall: float):
        self.began, self.began_wall = began, began_wall  # the scale request (monotonic, unix)
        self.ready_seen, self.ready_seen_wall = ready_seen, ready_seen_wall  # the gateway saw it ready
        self.first_answer: float | None = None  # monotonic time of the first held request's answer
        self.answered = asyncio.Event()


def answered(version: VersionRoute) -> None:
    """A held request of ``version`` got its replica's answer: the first one ends the cold start."""
    pending = version.cold_start
    if pending is not None and pending.first_answer is None:
        pending.first_answer = time.monotonic()
        pending.answered.set()


async def _record_cold_start(
    gateway: Gateway, route: FunctionRoute, version: VersionRoute, pending: ColdStart
) -> None:
    with contextlib.suppress(TimeoutError):  # a held request that failed: the start ends at ready
        async with asyncio.timeout(FIRST_ANSWER_WAIT_S):
            await pending.answered.wait()
    described = await _describe_start(route.name, version)
    parts = cold_start_parts(pending, *described) if described else {}
    end = pending.first_answer if pending.first_answer is not None else pending.ready_seen
    parts["total"] = end - pending.began
    if pending.first_answer is not None:
        parts.setdefault("first_answer", pending.first_answer - pending.ready_seen)
    for part, seconds in parts.items():
        gateway.metrics.cold_start_seconds.labels(route.name, part).observe(seconds)
    gateway.metrics.cold_starts.labels(route.name, version.label).inc()
    standby = bool(described and "activated" in described[0])
    route.stats.last_cold_start = {
        "version": version.label,
        "at": round(time.time(), 3),
        "standby": standby,  # a warm pool's standby was claimed
        **{f"{part}_s": round(seconds, 3) for part, seconds in parts.items()},
    }
    shown = ", ".join(f"{part} {seconds:.3f}s" for part, seconds in parts.items())
    log.info("%s@%s: cold start%s %s", route.name, version.label, " (standby)" if standby else "", shown)


PARTS = ("start", "import", "fetch", "framework", "load", "warm_up", "other", "ready", "first_answer")


def cold_start_parts(
    pending: ColdStart, timeline: dict[str, float], entry: dict[str, Any]
) -> dict[str, float]:
    """A cold start in parts that add up to its total (seconds, each at least 0):

    - ``start``: the scale request until the process ran (a process or container started; for a
      claimed standby, until its signal arrived);
    - ``import``: the interpreter, the runtime and the function file (0 for a standby: done before);
    - ``fetch``, ``framework`` (TensorFlow or LiteRT imported), ``load``, ``warm_up``: the runtime's;
    - ``other``: the rest of the runtime's way to ready (its server starting, the store's listing);
    - ``ready``: until the gateway saw it ready; ``first_answer``: until the first held request's
      answer came back.

    >>> p = ColdStart(began=0.0, began_wall=100.0, ready_seen=2.0, ready_seen_wall=102.0)
    >>> t = {"process": 100.2, "function_imported": 100.7, "ready": 101.9}
    >>> e = {"fetch_s": 0.1, "framework_import_s": 0.6, "model_load_s": 0.3, "warm_up_s": 0.1}
    >>> [round(v, 3) for v in cold_start_parts(p, t, e).values()]  # in the order of PARTS
    [0.2, 0.5, 0.1, 0.6, 0.3, 0.1, 0.1, 0.1]
    """
    began = pending.began_wall
    if "activated" in timeline:  # a standby: it imported and fetched before anyone waited
        started, loading_from, imported = timeline["activated"], timeline["activated"], 0.0
    else:
        started = timeline.get("process", began)
        loading_from = timeline.get("function_imported", started)
        imported = loading_from - started
    ready_at = timeline.get("ready", pending.ready_seen_wall)
    runtime = {
        "fetch": float(entry.get("fetch_s") or 0.0),
        "framework": float(entry.get("framework_import_s") or 0.0),
        "load": float(entry.get("model_load_s") or 0.0),
        "warm_up": float(entry.get("warm_up_s") or 0.0),
    }
    parts = {"start": started - began, "import": imported, **runtime}
    parts["other"] = ready_at - loading_from - sum(runtime.values())
    parts["ready"] = pending.ready_seen_wall - ready_at
    return {part: max(0.0, seconds) for part, seconds in parts.items()}


async def _describe_start(
    function: str, version: VersionRoute
) -> tuple[dict[str, float], dict[str, Any]] | None:
    """The replica's start timeline and its function's load figures, from its ``GET /functions``."""
    endpoint = version.balancer.pick()
    if endpoint is None:
        return None
    try:
        async with asyncio.timeout(5):
            status, _, body = await endpoint.pool.request(b"GET", b"/functions", [], b"")
        info: Any = orjson.loads(body) if status == 200 else {}
        entry = next(f for f in info["functions"] if f.get("name") == function)
        timeline = {str(k): float(v) for k, v in (info.get("timeline") or {}).items()}
        timeline.setdefault("process", float(info["started_at"]))  # a runtime from before timelines
        return timeline, dict(entry)
    except (
        UpstreamError,
        TimeoutError,
        orjson.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        StopIteration,
        AttributeError,
    ):
        log.debug("%s@%s: the replica did not describe its start", function, version.label)
        return None

"""Shadow traffic: a share of live requests copied to a rollout's candidate, off the caller's path.

The proxy answers the caller from the stable version first; only then, for a request chosen by the
policy's ``shadow_fraction``, a task sends the same request to a ready replica of the candidate and
pairs the two answers in the stage's :class:`~fnserve.gateway.analysis.ShadowWindow`. The
candidate's answer goes nowhere else. A candidate that is slow or failing costs the callers
nothing: the copy is never awaited, it is bounded by the policy's ``shadow_timeout_s``, and at most
``MAX_IN_FLIGHT`` copies run at once (more are skipped and counted, never queued). Copies carry
``X-Fnserve-Shadow: 1`` so the candidate's own logs and captures can tell them apart.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from fnserve.gateway.analysis import StageWindow
from fnserve.gateway.balancer import Endpoint
from fnserve.gateway.routing import FunctionRoute
from fnserve.gateway.upstream import Headers, UpstreamError

if TYPE_CHECKING:
    from fnserve.gateway.service import Gateway

log = logging.getLogger("fnserve.gateway")

MAX_IN_FLIGHT = 64  # copies awaiting the candidate at once, over every function
SHADOW_HEADER = (b"x-fnserve-shadow", b"1")


class Shadow:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def wanted(self, route: FunctionRoute, label: str) -> StageWindow | None:
        """The window to pair into when this request, answered by ``label``, is to be copied."""
        window = route.stats.trial
        rollout, policy = route.deployment.rollout, route.deployment.policy
        if window is None or rollout is None or policy is None or not rollout.active or rollout.paused:
            return None
        if label != rollout.stable or not policy.stages[rollout.stage].shadow:
            return None
        if (window.candidate, window.stage, window.since) != (
            rollout.candidate,
            rollout.stage,
            rollout.stage_started,
        ):
            return None
        return window if random.random() < policy.shadow_fraction else None

    def copy(
        self,
        route: FunctionRoute,
        window: StageWindow,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes,
        stable_status: int,
        stable_answer: bytes,
    ) -> None:
        """Send the request to the candidate in the background (never awaited by the caller)."""
        if stable_status != 200:
            return  # nothing to pair with: stable's own failures are counted by the proxy
        candidate = route.versions.get(window.candidate)
        endpoint = candidate.balancer.pick([]) if candidate is not None else None
        if endpoint is None or self.in_flight >= MAX_IN_FLIGHT:
            window.shadow.skipped += 1
            self.gateway.metrics.shadow.labels(route.name, "skipped").inc()
            return
        policy = route.deployment.policy
        timeout = policy.shadow_timeout_s if policy is not None else 5.0
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._send(
                route.name,
                window,
                endpoint,
                method,
                target,
                [*headers, SHADOW_HEADER],
                body,
                stable_answer,
                timeout,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self,
        name: str,
        window: StageWindow,
        endpoint: Endpoint,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes,
        stable_answer: bytes,
        timeout_s: float,
    ) -> None:
        started = time.monotonic()
        endpoint.outstanding += 1
        try:
            status, _, answer = await asyncio.wait_for(
                endpoint.pool.request(method, target, headers, body),
                timeout_s,
            )
        except Exception as exc:  # the candidate's failure, whatever it is, is only evidence
            window.shadow.fail(time.monotonic() - started)
            self.gateway.metrics.shadow.labels(name, "failed").inc()
            if not isinstance(exc, (UpstreamError, TimeoutError, OSError)):
                log.exception("%s: shadow copy to %s failed", name, window.candidate)
            else:
                log.info(
                    "%s: shadow copy to %s failed: %s", name, window.candidate, exc or type(exc).__name__
                )
            return
        finally:
            endpoint.outstanding -= 1
            self.in_flight -= 1
        seconds = time.monotonic() - started
        if status != 200:
            window.shadow.fail(seconds)
            self.gateway.metrics.shadow.labels(name, "failed").inc()
            return
        window.shadow.add(stable_answer, answer, seconds)
        self.gateway.metrics.shadow.labels(name, "paired").inc()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

"""The gateway's part in a rollout: noticing a candidate, judging each stage, and acting on it.

Every control-loop tick, for each function with a policy (:mod:`fnserve.gateway.rollout`):

* no rollout in progress: every ``checkpoint_check_s`` the checkpoint store is asked for the
  function's newest version; one newer than the stable version's (and never rolled back before)
  is deployed as version ``ckpt<N>`` beside it — the same image, that checkpoint — and becomes the candidate.
  (A new image deployed as a new version becomes the candidate through the admin API.)
* a rollout in progress and not paused: its stage is judged over the stage's window
  (:func:`fnserve.gateway.analysis.judge`). Pass: the next stage's weights, or the promotion.
  Fail: back to stable at once, the gate and its numbers recorded as the reason.

Each decision is saved with the deployment (state, decision log) before it is routed by, so a
gateway restarted mid-rollout resumes the stage it recorded, judging it on fresh evidence;
one loop makes every decision, so nothing is both promoted and rolled back.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from fnserve.gateway import deployments
from fnserve.gateway.activator import why_not_ready
from fnserve.gateway.analysis import StageWindow, judge
from fnserve.gateway.platform import FunctionDeployment
from fnserve.gateway.routing import FunctionRoute

if TYPE_CHECKING:
    from fnserve.gateway.service import Gateway

log = logging.getLogger("fnserve.gateway")

Checkpoints = Callable[[str], list[int]]  # a function's published checkpoint versions, oldest first
DRIFT_CHECK_S = 5.0  # how often the candidate's monitor is read for the input_drift gate
CANDIDATE_PREFIX = "ckpt"


class Releaser:
    def __init__(
        self, gateway: Gateway, checkpoints: Checkpoints | None, clock: Callable[[], float] = time.time
    ):
        self.gateway = gateway
        self.checkpoints = checkpoints
        self.clock = clock
        self._store_checked: dict[str, float] = {}
        self._drift: dict[str, tuple[float, float | None]] = {}  # function -> (read at, value)

    async def tick(self, route: FunctionRoute) -> None:
        deployment = route.deployment
        if deployment.policy is None:
            return
        rollout = deployment.rollout
        if rollout is None or not rollout.active:
            route.stats.trial = None
            self.gateway.metrics.rollout_stage.labels(route.name).set(0)
            await self._look_for_candidate(route)
            return
        self.gateway.metrics.rollout_stage.labels(route.name).set(rollout.stage + 1)
        window = route.stats.trial
        key = (rollout.candidate, rollout.stage, rollout.stage_started)
        if window is None or (window.candidate, window.stage, window.since) != key:
            window = StageWindow(rollout.candidate, rollout.stable, rollout.stage, rollout.stage_started)
            route.stats.trial = window
        if rollout.paused:
            return
        candidate = route.versions.get(rollout.candidate)
        if candidate is not None and candidate.balancer.ready:
            window.ready_seen = True
        waited = time.monotonic() - window.started
        if not window.ready_seen and waited > deployment.policy.ready_timeout_s:
            why = await why_not_ready(self.gateway, route, candidate) if candidate is not None else ""
            reason = f"no replica of version {rollout.candidate} became ready within {waited:.0f} s"
            await self.decide(
                deployments.fail_rollout(deployment, self.clock(), reason + (f": {why}" if why else ""))
            )
            return
        stage = deployment.policy.stages[rollout.stage]
        drift = await self._input_drift(route) if "input_drift" in deployment.policy.gates else None
        verdict = judge(deployment.policy, stage, window, drift)
        for name, value in verdict.measured.items():
            if name in deployment.policy.gates:
                shown = math.nan if value is None else value
                self.gateway.metrics.rollout_gate.labels(route.name, name).set(shown)
        if verdict.decision == "pass":
            await self.decide(deployments.advance_rollout(deployment, self.clock(), verdict.evidence))
        elif verdict.decision == "fail":
            await self.decide(deployments.fail_rollout(deployment, self.clock(), verdict.evidence))

    async def decide(self, changed: FunctionDeployment) -> FunctionRoute:
        """Save and route by a rollout decision (``Gateway.apply`` logs and counts it)."""
        return await self.gateway.apply(changed)

    async def _look_for_candidate(self, route: FunctionRoute) -> None:
        if self.checkpoints is None:
            return
        now = time.monotonic()
        if now - self._store_checked.get(route.name, -math.inf) < self.gateway.options.checkpoint_check_s:
            return
        self._store_checked[route.name] = now
        deployment = route.deployment
        stable = deployment.heaviest()
        assert stable is not None  # a deployment has at least one version
        serving = deployment.versions[stable].checkpoint_version
        if not serving.isdigit():
            return  # "latest": its replicas load every new checkpoint themselves
        try:
            published = await self.gateway.call(self.checkpoints, route.name)
        except Exception as exc:  # a store hiccup: the next check retries
            log.warning("%s: cannot list checkpoints for a rollout: %s", route.name, exc)
            return
        tried = {
            int(v.checkpoint_version) for v in deployment.versions.values() if v.checkpoint_version.isdigit()
        }
        fresh = [v for v in published if v > int(serving) and v not in deployment.rejected and v not in tried]
        if not fresh:
            return
        newest = max(fresh)
        label = f"{CANDIDATE_PREFIX}{newest}"
        image = deployment.versions[stable].image
        # earlier candidates now at weight 0 (a promoted one's predecessor) go: versions do not pile up
        kept = {
            k: v for k, v in deployment.versions.items() if v.weight > 0 or not k.startswith(CANDIDATE_PREFIX)
        }
        added = deployments.deploy(
            dataclasses.replace(deployment, versions=kept, previous_weights=None),
            route.name,
            version=label,
            image=image,
            checkpoint_version=str(newest),
            weight=0,
        )
        started = deployments.start_rollout(
            added, label, self.clock(), checkpoint=newest, why=f"checkpoint {newest} was published"
        )
        await self.decide(started)

    async def _input_drift(self, route: FunctionRoute) -> float | None:
        """The largest input PSI the candidate's replica reports for its own checkpoint."""
        rollout = route.deployment.rollout
        assert rollout is not None
        read_at, value = self._drift.get(route.name, (-math.inf, None))
        if time.monotonic() - read_at < DRIFT_CHECK_S:
            return value
        version = route.versions.get(rollout.candidate)
        endpoint = version.balancer.pick([]) if version is not None else None
        value = None
        if endpoint is not None:
            try:
                status, _, body = await endpoint.pool.request(b"GET", b"/monitor", [], b"")
                value = max_input_psi(orjson.loads(body), route.name) if status == 200 else None
            except Exception as exc:  # an unreadable monitor: the gate stays unmeasured
                log.info("%s: cannot read the candidate's monitor: %s", route.name, exc)
        self._drift[route.name] = (time.monotonic(), value)
        return value


def max_input_psi(document: object, function: str) -> float | None:
    """The largest input feature PSI in a replica's ``GET /monitor`` document (None: none scored)."""
    if not isinstance(document, dict):
        return None
    versions = document.get("functions", {}).get(function, {}).get("versions", {})
    scores = [
        float(f["psi"])
        for profile in versions.values()
        for f in profile.get("features", [])
        if f.get("role") == "input" and isinstance(f.get("psi"), (int, float))
    ]
    return max(scores) if scores else None

"""The gateway's life: the routes it serves, its control loop, and every call to the platform.

The request path never calls the platform: it reads the routing state that the control loop
keeps fresh (every ``tick_s``: replicas, load samples, autoscaler decisions) and that the admin
API changes. Platform calls are blocking, so they run in worker threads.

    gateway = Gateway(LocalPlatform(settings), GatewayOptions(token="..."))
    await gateway.start()          # routes the platform's saved state; min replicas come up
    await gateway.apply(deployment)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fnserve.gateway.autoscaler import decide
from fnserve.gateway.metrics import GatewayMetrics
from fnserve.gateway.platform import FunctionDeployment, Platform, PlatformError
from fnserve.gateway.release import Checkpoints, Releaser
from fnserve.gateway.routing import FunctionRoute, FunctionStats, VersionRoute
from fnserve.gateway.scheduler import scheduler_for
from fnserve.gateway.shadow import Shadow
from fnserve.gateway.upstream import Pool
from fnserve.runtime.dashboard.series import RecentStats

log = logging.getLogger("fnserve.gateway")
T = TypeVar("T")


@dataclass(frozen=True)
class GatewayOptions:
    token: str = ""  # admin API bearer token ("" refuses every admin request)
    protect_predictions: bool = False  # prediction routes need the token too
    max_body_bytes: int = 64 * 1024 * 1024  # larger request bodies get 413 before they are buffered
    hold_timeout_s: float = 60.0  # longest a request waits for a replica (waking from zero)
    hold_queue: int = 1000  # requests a function may hold at once; more get 429
    tick_s: float = 0.5  # control loop period: replicas, load samples, scaling decisions
    poll_s: float = 0.05  # replica refresh period while a version wakes up
    state_refresh_s: float = 2.0  # re-read the platform's saved state (changes made without the API)
    upstream_timeout_s: float = 300.0  # longest wait for a replica's answer (functions have deadlines)
    checkpoint_check_s: float = 5.0  # how often rollouts ask the store for a new checkpoint, per function


class Gateway:
    def __init__(
        self,
        platform: Platform,
        options: GatewayOptions | None = None,
        *,
        checkpoints: Checkpoints | None = None,
        clock: Callable[[], float] | None = None,
    ):
        """``checkpoints(name)``: the function's published checkpoint versions, for rollouts to
        notice a new one (None: only new versions deployed by hand start rollouts). ``clock``: the
        wall clock (Unix seconds) ``[train] schedule`` is read by (default: ``time.time``)."""
        self.platform = platform
        self.options = options or GatewayOptions()
        self.target = str(getattr(platform, "target", type(platform).__name__))
        self.metrics = GatewayMetrics()
        self.recent = RecentStats()  # the dashboard's figures of the last minutes
        self.functions: dict[str, FunctionRoute] = {}
        self.draining = False
        self.started = False  # the saved state is routed and the control loop runs
        self._changes = 0  # admin changes made; a state read that overlapped one is stale
        self._loop_task: asyncio.Task[None] | None = None
        self.shadow = Shadow(self)
        self._retiring: dict[asyncio.Task[None], VersionRoute] = {}  # removed versions, closing
        self.releaser = Releaser(self, checkpoints)
        # [train] schedule on targets whose platform trains (local, docker); None on k8s (CronJobs)
        self.training = scheduler_for(
            platform, self.metrics.registry, tick_s=self.options.tick_s, clock=clock
        )

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """A platform call, off the event loop."""
        return await asyncio.to_thread(func, *args)

    def pool_for(self, url: str) -> Pool:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise PlatformError(f"replica URL {url!r} has no host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return Pool(parts.hostname, port, timeout_s=self.options.upstream_timeout_s)

    # --- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        for deployment in (await self.call(self.platform.load_state)).values():
            route = self.install(deployment)
            for version in route.versions.values():
                version.desired = await self.call(self.platform.desired, route.name, version.label)
        for route in list(self.functions.values()):
            await self.tick(route)
        self._loop_task = asyncio.get_running_loop().create_task(self._control_loop(), name="gateway-control")
        if self.training is not None:
            await self.training.start(lambda: list(self.functions))
        self.started = True

    async def stop(self) -> None:
        self.draining = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self.training is not None:
            await self.training.stop()  # runs going are stopped, and recorded failed
        await self.shadow.close()
        for task, retired in list(self._retiring.items()):
            task.cancel()
            retired.balancer.close()  # here: a task cancelled before its first step runs no finally
        wakers = []
        for route in self.functions.values():
            for version in route.versions.values():
                if version.waker is not None:
                    version.waker.cancel()
                    wakers.append(version.waker)
                version.balancer.close()
        await asyncio.gather(*wakers, return_exceptions=True)  # each closes the pool it polls with
        close = getattr(self.platform, "close", None)
        if callable(close):
            await self.call(close)

    # --- desired state ------------------------------------------------------------------------

    def install(self, deployment: FunctionDeployment) -> FunctionRoute:
        """Route by ``deployment`` from the next request on; live versions keep their replicas."""
        old = self.functions.get(deployment.name)
        kept = old.versions if old else {}
        versions = {
            label: kept.get(label) or VersionRoute(deployment.name, label, self.pool_for)
            for label in deployment.versions
        }
        route = FunctionRoute(deployment, versions, old.stats if old else FunctionStats())
        self.functions[deployment.name] = route
        for label, gone in kept.items():
            if label not in versions:  # removed (a rolled-back candidate): its connections go too
                self._retire(gone)
        return route

    def _retire(self, version: VersionRoute) -> None:
        """Close a removed version's connections: idle ones now, busy ones once answered."""
        version.apply([])
        version.routable.set()  # requests held for it wake and find it gone
        if not version.balancer.known:
            return

        async def close_when_idle() -> None:
            deadline = time.monotonic() + self.options.upstream_timeout_s
            try:
                while version.balancer.known and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    version.apply([])
            finally:
                version.balancer.close()

        with contextlib.suppress(RuntimeError):  # no running loop: nothing is in flight either
            task = asyncio.get_running_loop().create_task(close_when_idle())
            self._retiring[task] = version
            task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def apply(self, deployment: FunctionDeployment) -> FunctionRoute:
        """Save a changed deployment, route by it at once, and bring its replicas in line."""
        self._changes += 1  # before and after the save: a state read overlapping it is dropped
        await self.call(self.platform.save_state, deployment)
        old = self.functions.get(deployment.name)
        seen = {(e["at"], e["message"]) for e in old.deployment.events} if old else set()
        for decision in deployment.events:  # rollout decisions, automatic or by hand
            if (decision["at"], decision["message"]) not in seen:
                self.metrics.rollout_decisions.labels(deployment.name, str(decision["kind"])).inc()
                log.info("%s: %s", deployment.name, decision["message"])
        route = self.install(deployment)
        self._changes += 1
        await self.tick(route)
        return route

    async def remove(self, name: str) -> None:
        self._changes += 1
        await self.call(self.platform.delete, name)
        self._changes += 1
        self._forget(name)

    def _forget(self, name: str) -> None:
        route = self.functions.pop(name, None)
        if route is not None:
            for version in route.versions.values():
                version.balancer.close()
                version.routable.set()  # wake held requests: they find the function gone
            self.metrics.forget(name)
            self.recent.forget(name)

    # --- control loop -------------------------------------------------------------------------

    async def _control_loop(self) -> None:
        state_read = time.monotonic()
        while True:
            await asyncio.sleep(self.options.tick_s)
            try:
                if time.monotonic() - state_read >= self.options.state_refresh_s:
                    state_read = time.monotonic()
                    await self._reread_state()
                for route in list(self.functions.values()):
                    await self.tick(route)
                for name in list(self.functions):  # rollout decisions, on the routes as ticked
                    if (ticked := self.functions.get(name)) is not None:
                        await self.releaser.tick(ticked)
            except Exception:  # the loop must outlive a platform hiccup; the next tick retries
                log.exception("gateway control loop: a tick failed")

    async def _reread_state(self) -> None:
        """Pick up changes saved without this gateway's admin API (another process, by hand)."""
        changes = self._changes
        saved = await self.call(self.platform.load_state)
        if changes != self._changes:
            return  # an admin change landed meanwhile: this read may predate it
        for name, deployment in saved.items():
            current = self.functions.get(name)
            if current is None or current.deployment != deployment:
                self.install(deployment)
        for name in set(self.functions) - set(saved):
            self._forget(name)

    async def refresh(self, route: FunctionRoute) -> None:
        """Take the platform's current replicas of every version (and of versions gone)."""
        replicas = await self.call(self.platform.replicas, route.name)
        for label, version in route.versions.items():
            version.apply(r for r in replicas if r.version == label)
            self.metrics.ready.labels(route.name, label).set(version.balancer.ready)
        for label in {r.version for r in replicas} - set(route.versions):
            await self.call(self.platform.scale, route.name, label, 0)  # a version no longer deployed

    async def tick(self, route: FunctionRoute) -> None:
        await self.refresh(route)
        now = time.monotonic()
        scaling = route.deployment.scaling
        for label, version in route.versions.items():
            version.meter.sample(now, scaling.stable_window_s)
            load = version.meter.load(now, scaling.stable_window_s, scaling.panic_window_s)
            decision = decide(
                scaling,
                load,
                now=now,
                current=version.desired,
                ready=version.balancer.ready,
                floor=route.floor(label),
                panic_until=version.panic_until,
            )
            version.panic_until = decision.panic_until
            if decision.desired != version.desired and not (version.waker and not version.waker.done()):
                await self.scale(route, version, decision.desired)

    async def scale(self, route: FunctionRoute, version: VersionRoute, replicas: int) -> None:
        log.info("%s@%s: %d -> %d replica(s)", route.name, version.label, version.desired, replicas)
        await self.call(self.platform.scale, route.name, version.label, replicas)
        version.desired = replicas
        self.metrics.desired.labels(route.name, version.label).set(replicas)
        if replicas < version.balancer.ready:
            await self.refresh(route)  # replicas going away stop taking traffic now

"""The ``docker`` target: the gateway's :class:`~fnserve.gateway.platform.Platform` on the local engine.

* state: ``.fnserve/deploy/docker/state.json`` in the project (atomic writes under a file lock, as
  for ``local``), so the CLI, a gateway on this machine and the gateway container share it;
* replicas: containers labelled with the project, function and version (:mod:`fnserve.docker.replicas`)
  on the private bridge network, reached at their address there (from a gateway container on the
  same network, or from this machine: Linux routes to bridge addresses); ready when ``/readyz``
  answers 200. Containers outlive the gateway: a new one adopts them;
* scale: new containers start at once; one being removed is reported draining at once, gets SIGTERM
  a moment later (the gateway has stopped sending it requests by then; the runtime then finishes what
  it holds and exits) and SIGKILL only past the drain timeout. Exited ones are removed; one that
  crashed is replaced (with a growing pause if it never got ready) and the last crash kept for logs;
* scheduled training (the gateway's ``[train] schedule``): a container of the deployed image runs
  ``train.py`` once (:meth:`DockerPlatform.run_training`); runs are kept in ``training.jsonl`` there.

    platform = DockerPlatform(load_settings("."), DockerEngine.connect())
    platform.save_state(FunctionDeployment("recs", {"1": VersionDeployment("fnserve/recs:3f2a9c1b7d0e")}))
    platform.scale("recs", "1", 2)
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from fnserve.docker.containers import StoreAccess
from fnserve.docker.replicas import (
    PORT,
    DockerSettings,
    Member,
    plan_version,
    project_id,
    replica_access,
    replica_spec,
    spec_digest,
)
from fnserve.docker.tracker import Tracker
from fnserve.docker_engine import ContainerInfo, DockerEngine, EngineError
from fnserve.gateway.platform import FunctionDeployment, PlatformError, Replica, VersionDeployment
from fnserve.gateway.statefile import StateFile
from fnserve.gateway.warmpool import POOL_RETRY_S, plan_version_pool
from fnserve.images.labels import (
    FUNCTION_LABEL,
    PROJECT_LABEL,
    ROLE_LABEL,
    SPEC_LABEL,
    STANDBY_LABEL,
    VERSION_LABEL,
)
from fnserve.project import ProjectSettings, state_dir

STOP_DELAY_S = 1.0  # draining -> SIGTERM: the gateway's next refresh (every 0.5 s) routes around it first
KILL_GRACE_S = 10.0  # past the runtime's drain timeout, SIGKILL
MAX_LOG_CONTAINERS = 5
STANDBY_PROBE_S = 0.2  # a standby not yet prepared is asked its /readyz at most this often
log = logging.getLogger("fnserve.gateway")


class DockerPlatform:
    target = "docker"

    def __init__(
        self,
        settings: ProjectSettings,
        engine: DockerEngine,
        docker: DockerSettings | None = None,
        *,
        probe_timeout_s: float = 0.5,
        stop_delay_s: float = STOP_DELAY_S,
    ):
        self.settings, self.engine = settings, engine
        self.docker = docker or DockerSettings()
        self.project = project_id(settings.project_dir)
        self.state = StateFile(state_dir(settings.project_dir, "deploy", "docker", "state.json"))
        self.training_log = self.state.path.with_name("training.jsonl")  # scheduled training runs
        self.kill_after_s = settings.drain_timeout_s + KILL_GRACE_S
        self.known = Tracker(stop_delay_s=stop_delay_s, kill_after_s=self.kill_after_s)
        self._lock = threading.RLock()
        self._desired: dict[tuple[str, str], int] = {}
        self._network = False  # the network is known to exist
        # The warm pool (fnserve.gateway.warmpool): containers labelled standby that serve once
        # claimed; which were claimed lives here, or is asked of the container after a restart.
        self._claimed: set[str] = set()
        self._armed: set[str] = set()  # standbys whose /readyz says they stand by
        self._prepared: set[str] = set()  # ... and have fetched and imported
        self._asked: dict[str, float] = {}  # when (monotonic) each standby's /readyz was last asked
        self._pool_paused: dict[tuple[str, str], float] = {}
        self._pool_view: dict[str, dict[str, int]] = {}  # function -> version -> armed standbys
        self._probe = httpx.Client(timeout=probe_timeout_s)

    # --- desired state ----------------------------------------------------------------------

    def load_state(self) -> dict[str, FunctionDeployment]:
        return self.state.read()

    def save_state(self, deployment: FunctionDeployment) -> None:
        for version in deployment.versions.values():
            self._store_access(version)  # the image exists and its replicas can reach the store
        self.state.change(lambda functions: functions.__setitem__(deployment.name, deployment))

    def delete(self, function: str) -> None:
        """Forget the function and stop its containers (each drains first), then remove them."""
        self.state.change(lambda functions: functions.pop(function, None))
        with self._lock:
            for key in [k for k in self._desired if k[0] == function]:
                del self._desired[key]
            self.known.forget_function(function)
            containers = self._containers(function)

        def stop(container: ContainerInfo) -> None:
            self.engine.stop(container.id, timeout_s=int(self.kill_after_s))
            self._remove(container.id)

        with ThreadPoolExecutor(8) as pool, engine_errors():
            list(pool.map(stop, containers))

    # --- replicas -----------------------------------------------------------------------------

    def replicas(self, function: str) -> list[Replica]:
        with self._lock, engine_errors():
            running = [
                c for c in self._reconcile(function)[0] if c.state == "running" and not self._in_pool(c)
            ]
            draining = set(self.known.draining)
        found = []
        for container in running:
            url, ready = self._url(container), False
            if url and container.id not in draining:
                ready = self._answers_ready(url)
                self.known.probed(container.id, ready)
            version = container.labels.get(VERSION_LABEL, "")
            if url:
                found.append(Replica(function, version, url, ready, container.id in draining, container.id))
        return found

    def scale(self, function: str, version: str, replicas: int) -> None:
        if replicas < 0:
            raise PlatformError(f"cannot scale {function}@{version} to {replicas} replicas", status=422)
        with self._lock, engine_errors():
            self._desired[(function, version)] = replicas
            errors = self._reconcile(function)[1]
        if errors:
            raise PlatformError(errors[0])

    def desired(self, function: str, version: str) -> int:
        with self._lock:
            if (function, version) not in self._desired:
                return len(self._live(self._containers(function), version))
            return self._desired[(function, version)]

    def _reconcile(self, function: str) -> tuple[list[ContainerInfo], list[str]]:
        """Signal draining containers, remove ended ones, then start or drain some so each version
        has its desired count of its current spec. Returns the containers seen and start errors."""
        now, errors = time.monotonic(), []
        containers = self._containers(function)
        for container in containers:
            if self._in_pool(container) and container.state in ("exited", "dead"):
                self._pool_ended(function, container, now)
                continue
            self._settle(function, container, now)
        deployment = self.state.read().get(function)
        versions = deployment.versions if deployment else {}
        labels = {v for f, v in self._desired if f == function}
        labels |= {c.labels.get(VERSION_LABEL, "") for c in containers if c.state == "running"}
        for label in labels:
            live = self._live(containers, label)
            spec = versions.get(label)
            want = self._desired.setdefault((function, label), len(live)) if spec else 0
            digest = spec_digest(spec) if spec else ""
            current = [(c, c.labels.get(SPEC_LABEL) == digest) for c in live]
            members = [
                Member(c.id, fresh, self.known.ready.get(c.id, False), c.created) for c, fresh in current
            ]
            plan = plan_version(members, want)
            for container_id in plan.stop:
                self.known.drain(container_id, now=now)
            if spec is not None and self.known.may_start((function, label), now=now):
                for _ in range(plan.start):
                    error = self._start(function, label, spec)
                    if error:  # the next try waits for the version's pause
                        errors.append(error)
                        break
        self._keep_pool(function, deployment, containers, now)
        return containers, errors

    # --- the warm pool ------------------------------------------------------------------------

    def _in_pool(self, container: ContainerInfo) -> bool:
        """A standby not claimed yet. Until it is prepared it is asked (its ``/readyz``) at most every
        ``STANDBY_PROBE_S``; one claimed before this platform started (a gateway restart) says so."""
        if container.labels.get(STANDBY_LABEL) != "true" or container.id in self._claimed:
            return False
        now = time.monotonic()
        asked = self._asked.get(container.id)
        if (
            container.id not in self._prepared
            and container.state == "running"
            and (asked is None or now - asked >= STANDBY_PROBE_S)
        ):
            self._asked[container.id] = now  # one reconcile asks in several places: one probe
            said = self._standing_by(container)
            if said is None:
                return True
            if said.get("standby") is not True:  # it serves: claimed before this platform started
                self._claimed.add(container.id)
                return False
            self._armed.add(container.id)
            if said.get("prepared") is True:
                self._prepared.add(container.id)
        return True

    def _standing_by(self, container: ContainerInfo) -> dict[str, object] | None:
        """The container's /readyz body (None: it does not answer yet)."""
        url = self._url(container)
        try:
            said = self._probe.get(f"{url}/readyz").json() if url else None
        except (httpx.HTTPError, ValueError):
            return None
        return said if isinstance(said, dict) else None

    def _pool_ended(self, function: str, container: ContainerInfo, now: float) -> None:
        """A standby exited: removed; unless it was stopped, plain starts for a while, with a warning."""
        key = (function, container.labels.get(VERSION_LABEL, ""))
        if container.id not in self.known.draining:
            self._pool_paused[key] = now + POOL_RETRY_S
            log.warning(
                "%s@%s: a warm-pool standby exited (status %s); plain starts for %.0f s",
                *key,
                container.exit_code,
                POOL_RETRY_S,
            )
        self._armed.discard(container.id)
        self._prepared.discard(container.id)
        self._asked.pop(container.id, None)
        self._remove(container.id)

    def _keep_pool(
        self,
        function: str,
        deployment: FunctionDeployment | None,
        containers: list[ContainerInfo],
        now: float,
    ) -> None:
        """Stop outdated standbys and start those each version's pool lacks (fnserve.gateway.warmpool)."""
        versions = deployment.versions if deployment else {}
        running = [c for c in containers if c.state == "running" and c.id not in self.known.draining]
        pool = [c for c in running if self._in_pool(c)]
        starting = any(not self.known.ready.get(c.id, False) for c in running if c not in pool)
        labels = set(versions) | {c.labels.get(VERSION_LABEL, "") for c in pool}
        prepared = (c.labels.get(VERSION_LABEL, "") for c in pool if c.id in self._prepared)
        self._pool_view[function] = dict(collections.Counter(prepared))
        for label in labels:
            spec, key = versions.get(label), (function, label)
            mine = sorted((c for c in pool if c.labels.get(VERSION_LABEL) == label), key=lambda c: c.created)
            digest = spec_digest(spec) if spec else ""
            fresh = [c.id for c in mine if c.labels.get(SPEC_LABEL) == digest]
            outdated = [c.id for c in mine if c.id not in fresh]
            plan, self._pool_paused[key] = plan_version_pool(
                function,
                label,
                deployment.scaling if deployment is not None and spec is not None else None,
                self._pool_paused.get(key, 0.0),
                now,
                fresh=fresh,
                outdated=outdated,
                starting=starting,
            )
            for container_id in plan.stop:
                self.known.drain(container_id, now=now)
            for _ in range(plan.start):
                assert spec is not None
                if self._start(function, label, spec, standby=True):
                    self._pool_paused[key] = now + POOL_RETRY_S  # why: kept for `fn logs`
                    break

    def standbys(self, function: str) -> dict[str, int]:
        """Prepared warm-pool standbys of each version, as the last reconcile saw them."""
        return dict(self._pool_view.get(function, {}))

    def _claim(self, function: str, label: str, spec: VersionDeployment) -> bool:
        """Claim an armed standby of this spec: SIGUSR1 makes it load and serve. False: none."""
        digest = spec_digest(spec)
        for container in sorted(self._containers(function), key=lambda c: c.created):
            mine = container.labels.get(VERSION_LABEL) == label and container.labels.get(SPEC_LABEL) == digest
            if (
                mine
                and container.state == "running"
                and container.id in self._armed
                and self._in_pool(container)
            ):
                if container.id in self.known.draining:
                    continue
                try:
                    self.engine.kill(container.id, "SIGUSR1")
                except EngineError:
                    continue
                self._claimed.add(container.id)
                self._armed.discard(container.id)
                self._prepared.discard(container.id)
                self._asked.pop(container.id, None)
                log.info("%s@%s: claimed warm-pool standby %s", function, label, container.id[:12])
                return True
        return False

    def _settle(self, function: str, container: ContainerInfo, now: float) -> None:
        """Send a draining container its signal; remove an ended one, but keep the last crash for logs."""
        if container.state == "running":
            signal = self.known.signal(container.id, now=now)
            if signal is not None:
                self.engine.kill(container.id, signal)
            return
        if container.state not in ("exited", "dead"):
            return
        if container.id in self.known.draining or container.exit_code == 0:  # drained, or stopped by hand
            self._remove(container.id)
            return
        key = (function, container.labels.get(VERSION_LABEL, ""))
        for older in self.known.crashed(key, container.id, now=now):
            self._remove(older)

    def _start(self, function: str, label: str, spec: VersionDeployment, *, standby: bool = False) -> str:
        """Start one replica (claiming a standby of the warm pool if one is armed), or with
        ``standby`` one for the pool; returns "" or why it could not start (kept for `fn logs`)."""
        key = (function, label)
        if not standby and self._claim(function, label, spec):
            self.known.started(key)
            return ""
        try:
            access = self._store_access(spec)
            if not self._network:
                self.engine.ensure_network(self.docker.network, {ROLE_LABEL: "network"})
                self._network = True
            name = f"fnserve-{function}-{label}-{secrets.token_hex(3)}"
            where = {"network": self.docker.network, "project": self.project}
            drain_s = self.settings.drain_timeout_s
            container = self.engine.run(
                replica_spec(
                    function,
                    label,
                    spec,
                    access,
                    name=name,
                    drain_timeout_s=drain_s,
                    standby=standby,
                    **where,
                )
            )
        except (EngineError, PlatformError) as exc:
            self._network = False
            what = "a warm-pool standby" if standby else "a replica"
            message = f"cannot start {what} of {function}@{label}: {exc}"
            if standby:  # the pool only speeds starts up: plain starts, with a warning
                log.warning("%s; plain starts", message)
                return message
            self.known.start_failed(key, message, now=time.monotonic())
            return message
        if not standby:
            self.known.started(key)
        elif container:
            log.info("%s@%s: warm-pool standby %s started", function, label, container[:12])
        return ""

    def _store_access(self, version: VersionDeployment) -> StoreAccess:
        """How the version's replicas reach the checkpoint store; its image must be here."""
        with engine_errors():
            info = self.engine.image(version.image)
        if info is None:
            raise PlatformError(
                f"image {version.image} is not in the local Docker engine: `fn build NAME` makes it "
                "(or pass --image with an image the engine has)",
                status=422,
            )
        return replica_access(self.settings, info.labels, self.docker.network, os.environ)

    # --- helpers ------------------------------------------------------------------------------

    def _containers(self, function: str) -> list[ContainerInfo]:
        labels = {ROLE_LABEL: "replica", PROJECT_LABEL: self.project, FUNCTION_LABEL: function}
        with engine_errors():
            return self.engine.list_containers(labels)

    def _live(self, containers: list[ContainerInfo], version: str) -> list[ContainerInfo]:
        return [
            c
            for c in containers
            if c.state == "running"
            and c.id not in self.known.draining
            and c.labels.get(VERSION_LABEL) == version
            and not self._in_pool(c)
        ]

    def _url(self, container: ContainerInfo) -> str:
        address = container.addresses.get(self.docker.network, "")
        return f"http://{address}:{PORT}" if address else ""

    def _answers_ready(self, url: str) -> bool:
        try:
            return self._probe.get(f"{url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def _remove(self, container: str) -> None:
        self.known.forget(container)
        self.engine.remove(container)

    # --- scheduled training (fnserve.gateway.scheduler) -------------------------------------------

    def run_training(
        self, function: str, data: str | None, *, output: Callable[[str], None], cancel: threading.Event
    ) -> int:
        """``train.py`` once, in a container of the image of the function's most-weighted version
        (:func:`fnserve.docker.training.train_image`); returns the version it published."""
        from fnserve.docker.training import train_image

        deployment = self.state.read().get(function)
        if deployment is None:
            raise PlatformError(f"no function named {function!r} is deployed", status=404)
        image = max(deployment.versions.values(), key=lambda v: v.weight).image
        with engine_errors():
            return train_image(
                self.settings, self.engine, image, function, data, on_output=output, cancel=cancel
            )

    # --- logs and shutdown ---------------------------------------------------------------------

    def logs(self, function: str, *, tail: int = 100) -> list[str]:
        """The last lines of the function's newest containers (a crashed one included), oldest first."""
        containers = sorted(self._containers(function), key=lambda c: c.created)[-MAX_LOG_CONTAINERS:]
        lines = [f"fnserve | {error}" for (f, _), error in self.known.errors.items() if f == function]
        for container in containers:
            where = f"{container.labels.get(VERSION_LABEL, '?')}/{container.name}"
            ended = f" (exited {container.exit_code})" if container.state in ("exited", "dead") else ""
            try:
                text = list(self.engine.logs(container.id, tail=tail))
            except EngineError as exc:
                text = [f"(no log: {exc})"]
            lines += [f"{where}{ended} | {line}" for line in text]
        return lines[-tail:]

    def close(self) -> None:
        """Replicas outlive the gateway; only this connection to the engine closes."""
        self._probe.close()
        self.engine.close()


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """An engine failure is the platform's: the admin API answers 502 with its message."""
    try:
        yield
    except EngineError as exc:
        raise PlatformError(str(exc)) from None


def create_platform(settings: ProjectSettings) -> DockerPlatform:
    """The ``docker`` target's entry point (:mod:`fnserve.gateway.targets`)."""
    from fnserve.docker_engine import EngineUnavailable

    try:
        docker = DockerSettings.load(settings.project_dir, os.environ)
        engine = DockerEngine.connect()
    except (ValueError, EngineUnavailable) as exc:
        raise PlatformError(str(exc)) from None
    return DockerPlatform(settings, engine, docker)

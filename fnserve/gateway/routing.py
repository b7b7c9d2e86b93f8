"""What the proxy routes by: prediction paths parsed to (function, pinned version, upstream path),
and the live routing state of each deployed function and version.

The gateway's versions are deployment labels: ``/function/recs@4`` means "version 4 as deployed",
whatever checkpoint it serves, so the pin is removed before the request goes to a replica.

>>> parse_path("/function/recs@4")
('recs', '4', '/function/recs')
>>> parse_path("/v2/models/recs/versions/4/infer")
('recs', '4', '/v2/models/recs/infer')
>>> parse_path("/v1/models/recs/versions/4:predict")
('recs', '4', '/v1/models/recs:predict')
>>> parse_path("/metrics") is None
True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from fnserve.gateway.analysis import StageWindow
from fnserve.gateway.autoscaler import LoadMeter
from fnserve.gateway.balancer import Balancer, Endpoint
from fnserve.gateway.metrics import Recent
from fnserve.gateway.platform import FunctionDeployment, Replica
from fnserve.gateway.split import Split, SplitError

log = logging.getLogger("fnserve.gateway")

V1_VERBS = ("predict", "classify", "regress")


def parse_path(path: str) -> tuple[str, str | None, str] | None:
    """A prediction path to ``(function, version or None, path for the replica)``; None otherwise."""
    if path.startswith("/function/"):
        target = path[10:]
        if not target or "/" in target:
            return None
        name, _, pinned = target.partition("@")
        return (name, pinned or None, "/function/" + name) if name else None
    if path.startswith("/v2/models/"):
        name, _, tail = path[11:].partition("/")
        version, tail = _versioned(tail)
        if tail not in ("", "ready", "infer") or version == "":
            return None
        return _named(name, version, "/v2/models/{}" + (f"/{tail}" if tail else ""))
    if path.startswith("/v1/models/"):
        rest, colon, verb = path[11:].partition(":")
        name, _, tail = rest.partition("/")
        version, tail = _versioned(tail)
        if tail not in ("", "metadata") or version == "" or (colon and (tail or verb not in V1_VERBS)):
            return None
        return _named(
            name, version, "/v1/models/{}" + (f"/{tail}" if tail else "") + (f":{verb}" if colon else "")
        )
    return None


def _versioned(tail: str) -> tuple[str | None, str]:
    if not tail.startswith("versions/"):
        return None, tail
    version, _, rest = tail[9:].partition("/")
    return version, rest


def _named(name: str, version: str | None, upstream: str) -> tuple[str, str | None, str] | None:
    name, _, pinned = name.partition("@")
    if not name:
        return None
    return name, version or pinned or None, upstream.format(name)


class VersionRoute:
    """One version of one function: its replicas, its load, and a flag for held requests."""

    def __init__(self, function: str, label: str, pool_for: Callable[[str], Any]):
        self.function, self.label = function, label
        self.balancer = Balancer(pool_for)
        self.meter = LoadMeter(time.monotonic())
        self.desired = 0
        self.panic_until: float | None = None
        self.routable = asyncio.Event()  # set while at least one replica takes traffic
        self.waker: asyncio.Task[None] | None = None
        self.why: asyncio.Task[str] | None = None  # the last inquiry into why it is not ready
        self.why_asked_at = 0.0
        self.replicas: list[Replica] = []
        self.cold_start: Any = None  # the wake-up from zero waiting for its first answer (activator)

    def apply(self, replicas: Iterable[Replica]) -> None:
        self.replicas = list(replicas)
        self.balancer.update(self.replicas)
        self._signal()

    def refused(self, endpoint: Endpoint) -> None:
        self.balancer.refused(endpoint)
        self._signal()

    def _signal(self) -> None:
        if self.balancer.endpoints:
            self.routable.set()
        else:
            self.routable.clear()


class FunctionStats:
    """What outlives a change of a function's deployment: held requests and recent figures."""

    def __init__(self) -> None:
        self.held = 0  # requests waiting for a replica
        self.recent = Recent()
        self.last_cold_start: dict[str, Any] | None = None
        self.trial: StageWindow | None = None  # the rollout stage in progress: what it has seen


class FunctionRoute:
    """A deployed function as routed now: its split and its versions (a change makes a new one)."""

    def __init__(
        self, deployment: FunctionDeployment, versions: dict[str, VersionRoute], stats: FunctionStats
    ):
        self.deployment = deployment
        self.name = deployment.name
        self.versions = versions
        self.stats = stats
        self.split = _split(deployment)
        key = (deployment.sticky_key or "").strip()
        self.sticky_header = key.lower().encode("latin-1") if key else None
        self.sticky_param = key or None

    def floor(self, label: str) -> int:
        """Fewest replicas a version keeps: ``min_replicas`` while it has a share of traffic, and
        at least one for a rollout's candidate."""
        weight = self.deployment.versions[label].weight
        rollout = self.deployment.rollout
        if rollout is not None and rollout.active and label == rollout.candidate:
            return max(1, self.deployment.scaling.min_replicas)  # shadow copies need it up, weight 0 or not
        return self.deployment.scaling.min_replicas if weight > 0 else 0

    def sticky_key(self, headers: list[tuple[bytes, bytes]], query: bytes) -> str | None:
        if self.sticky_header is None:
            return None
        for header, raw in headers:
            if header == self.sticky_header:
                return raw.decode("latin-1")
        if query and self.sticky_param:
            for param, value in parse_qsl(query.decode("latin-1")):
                if param == self.sticky_param:
                    return value
        return None


def _split(deployment: FunctionDeployment) -> Split:
    try:
        return Split(deployment.weights())
    except SplitError as exc:  # state written by hand or another tool: route to the heaviest version
        heaviest = max(deployment.versions, key=lambda k: deployment.versions[k].weight)
        log.warning("%s: %s; sending all traffic to version %s", deployment.name, exc, heaviest)
        return Split({label: 100 if label == heaviest else 0 for label in deployment.versions})

"""What the gateway needs from a deploy target, and the deployment state it routes by.

The gateway (``fnserve.gateway``) owns per-function URLs, load balancing, scale to zero,
autoscaling decisions and traffic splits. Where replicas actually run is a *platform*:
local processes (tests, laptops), Docker containers (``--target docker``) or Kubernetes
(``--target k8s``). Each platform implements :class:`Platform`; the gateway never talks to
Docker or Kubernetes itself (those adapters are ``fnserve.docker_engine`` and ``fnserve.k8s``).

The deployment state is plain data (:class:`FunctionDeployment`), persisted by the platform
(a JSON file, container labels, or a ConfigMap), so a restarted gateway routes as before;
``to_dict``/``from_dict`` give the JSON form every platform and the admin API use.

The gateway calls a platform from worker threads, never on its event loop, and may call it from
two threads at once (its control loop and a request waking a function from zero): implementations
are blocking and thread-safe. A target plugs in through ``fnserve.gateway.targets.platform_for``.

    state = FunctionDeployment(
        name="recs",
        versions={"3": VersionDeployment(image="fnserve/recs:ab12", weight=90),
                  "4": VersionDeployment(image="fnserve/recs:cd34", weight=10)},
        scaling=Scaling(min_replicas=0, max_replicas=4, scale_to_zero_after_s=300),
    )
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fnserve.gateway.rollout import Rollout, RolloutPolicy
from fnserve.runtime.errors import ConfigError, FnError

# A version label: what follows "@" in a pinned URL and names a Deployment/container on every target.
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


MAX_WARM_POOL = 8


@dataclass(frozen=True)
class Scaling:
    min_replicas: int = 1  # 0 allows scale to zero
    max_replicas: int = 4
    scale_to_zero_after_s: float = 300.0  # idle this long (and min_replicas == 0) -> 0 replicas
    target_in_flight: float = 8.0  # desired in-flight requests per replica (the talk's queue-size metric)
    stable_window_s: float = 60.0  # scale down on the average over this window
    panic_window_s: float = 6.0  # scale up fast when this window's load is 2x the target
    warm_pool: int = 1  # standbys kept per version while it may scale to zero (fnserve.gateway.warmpool)

    def __post_init__(self) -> None:
        if not all(type(n) is int for n in (self.min_replicas, self.max_replicas)):
            raise ValueError("min_replicas and max_replicas must be integers")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(
                f"replicas: need 0 <= min ({self.min_replicas}) <= max ({self.max_replicas}) and max >= 1"
            )
        if self.scale_to_zero_after_s <= 0 or self.target_in_flight <= 0:
            raise ValueError("scale_to_zero_after_s and target_in_flight must be positive")
        if type(self.warm_pool) is not int or not 0 <= self.warm_pool <= MAX_WARM_POOL:
            raise ValueError(
                f"warm_pool must be an integer from 0 to {MAX_WARM_POOL}, got {self.warm_pool!r}"
            )
        if not 0 < self.panic_window_s <= self.stable_window_s:
            raise ValueError("need 0 < panic_window_s <= stable_window_s")


@dataclass(frozen=True)
class VersionDeployment:
    image: str  # the image (or, for local processes, the function folder) serving this version
    weight: int = 100  # share of unpinned traffic, 0-100 across the function's versions
    checkpoint_version: str = "latest"  # the checkpoint the runtime loads ("latest" or a number)


@dataclass(frozen=True)
class FunctionDeployment:
    name: str
    versions: Mapping[str, VersionDeployment]  # deployment version label -> how it runs
    scaling: Scaling = field(default_factory=Scaling)
    sticky_key: str | None = None  # request header or query parameter that pins a caller to one version
    previous_weights: Mapping[str, int] | None = None  # for `fn rollback`: the split before the last change
    policy: RolloutPolicy | None = None  # [rollout]: new versions become candidates (None: they do not)
    rollout: Rollout | None = None  # the current or last rollout
    events: tuple[Mapping[str, Any], ...] = ()  # the newest rollout decisions, oldest first
    rejected: tuple[int, ...] = ()  # checkpoint versions rolled back: never tried again

    def weights(self) -> dict[str, int]:
        return {label: v.weight for label, v in self.versions.items()}

    def heaviest(self, excluding: str | None = None) -> str | None:
        """The version with the most weight (ties: the greatest label), ``excluding`` left out."""
        weights = {k: v.weight for k, v in self.versions.items() if k != excluding}
        return max(weights, key=lambda k: (weights[k], k)) if weights else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (state files, ConfigMaps, the admin API); ``from_dict`` reads it back."""
        return {
            "name": self.name,
            "versions": {label: dataclasses.asdict(v) for label, v in self.versions.items()},
            "scaling": dataclasses.asdict(self.scaling),
            "sticky_key": self.sticky_key,
            "previous_weights": dict(self.previous_weights) if self.previous_weights is not None else None,
            "policy": self.policy.to_dict() if self.policy else None,
            "rollout": self.rollout.to_dict() if self.rollout else None,
            "events": [dict(e) for e in self.events],
            "rejected": list(self.rejected),
        }

    @classmethod
    def from_dict(cls, data: Any) -> FunctionDeployment:
        """Parse (and check) the JSON form; a ``ValueError`` names what is wrong."""
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise ValueError("a deployment is an object with a string 'name'")
        versions = data.get("versions")
        if not isinstance(versions, Mapping) or not versions:
            raise ValueError(f"{data['name']}: 'versions' must be a non-empty object")
        try:
            parsed = {str(k): VersionDeployment(**v) for k, v in versions.items()}
            scaling = Scaling(**data.get("scaling", {}))
        except TypeError as exc:
            raise ValueError(f"{data['name']}: {exc}") from None
        for label, v in parsed.items():
            if not VERSION_RE.match(label):
                raise ValueError(f"version label {label!r}: use letters, digits, '.', '_' or '-'")
            if not isinstance(v.weight, int) or not 0 <= v.weight <= 100 or not isinstance(v.image, str):
                raise ValueError(f"version {label!r}: weight must be an integer 0-100 and image a string")
        previous = data.get("previous_weights")
        try:
            policy = RolloutPolicy.from_dict(data["policy"]) if data.get("policy") else None
        except ConfigError as exc:
            raise ValueError(f"{data['name']}: {exc.message}") from None
        rollout = Rollout.from_dict(data["rollout"]) if data.get("rollout") else None
        events, rejected = data.get("events") or [], data.get("rejected") or []
        if not isinstance(events, list) or not all(isinstance(e, Mapping) for e in events):
            raise ValueError(f"{data['name']}: 'events' must be a list of objects")
        if not isinstance(rejected, list) or not all(type(v) is int for v in rejected):
            raise ValueError(f"{data['name']}: 'rejected' must be a list of checkpoint versions")
        return cls(
            name=data["name"],
            versions=parsed,
            scaling=scaling,
            sticky_key=data.get("sticky_key") or None,
            previous_weights={str(k): int(w) for k, w in previous.items()} if previous else None,
            policy=policy,
            rollout=rollout,
            events=tuple(events),
            rejected=tuple(rejected),
        )


@dataclass(frozen=True)
class Replica:
    """One running copy of one version of a function, as the platform sees it."""

    function: str
    version: str
    url: str  # base URL the gateway can reach, e.g. http://10.0.0.5:8080
    ready: bool  # the runtime's /readyz answered 200 (or the platform's readiness says so)
    draining: bool = False  # terminating: never send new requests
    id: str = ""  # container id, pod name, or process id


class PlatformError(FnError):
    """The platform could not do what was asked; the message is meant for the user.

    ``status`` is what the admin API answers: 502 when the platform failed (the default), a 4xx
    when the request itself was wrong (e.g. an image or folder that does not exist: 422)."""

    status = 502


class Platform(Protocol):
    """A place where function replicas run. Implementations: local, docker, k8s."""

    def load_state(self) -> dict[str, FunctionDeployment]:
        """Every deployed function's desired state."""
        ...

    def save_state(self, deployment: FunctionDeployment) -> None:
        """Persist one function's desired state (weights, scaling, versions)."""
        ...

    def delete(self, function: str) -> None:
        """Remove the function: its replicas and its state."""
        ...

    def replicas(self, function: str) -> list[Replica]:
        """The function's current replicas, every version, ready or not."""
        ...

    def scale(self, function: str, version: str, replicas: int) -> None:
        """Ask for ``replicas`` copies of one version (0 stops them all). Returns without waiting.

        Replicas being removed are reported ``draining`` (or not at all) by ``replicas()`` from then
        on, and finish the requests they hold (the runtime drains on SIGTERM)."""
        ...

    def desired(self, function: str, version: str) -> int:
        """The replica count last asked for."""
        ...

    def logs(self, function: str, *, tail: int = 100) -> list[str]:
        """Recent log lines of the function's replicas."""
        ...

    # Optional: ``close()`` (no arguments), if present, is called once when the gateway stops; the
    # local platform stops its replica processes there. Docker and Kubernetes replicas outlive it.

"""What the gateway needs from a deploy target, and the deployment state it routes by.

The gateway (``fnserve.gateway``) owns per-function URLs, load balancing, scale to zero,
autoscaling decisions and traffic splits. Where replicas actually run is a *platform*:
local processes (tests, laptops), Docker containers (``--target docker``) or Kubernetes
(``--target k8s``). Each platform implements :class:`Platform`; the gateway never talks to
Docker or Kubernetes itself (those adapters are ``fnserve.docker_engine`` and ``fnserve.k8s``).

The deployment state is plain data (:class:`FunctionDeployment`), persisted by the platform
(a JSON file, container labels, or a ConfigMap), so a restarted gateway routes as before.

    state = FunctionDeployment(
        name="recs",
        versions={"3": VersionDeployment(image="fnserve/recs:ab12", weight=90),
                  "4": VersionDeployment(image="fnserve/recs:cd34", weight=10)},
        scaling=Scaling(min_replicas=0, max_replicas=4, scale_to_zero_after_s=300),
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Scaling:
    min_replicas: int = 1  # 0 allows scale to zero
    max_replicas: int = 4
    scale_to_zero_after_s: float = 300.0  # idle this long (and min_replicas == 0) -> 0 replicas
    target_in_flight: float = 8.0  # desired in-flight requests per replica (the talk's queue-size metric)
    stable_window_s: float = 60.0  # scale down on the average over this window
    panic_window_s: float = 6.0  # scale up fast when this window's load is 2x the target


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


@dataclass(frozen=True)
class Replica:
    """One running copy of one version of a function, as the platform sees it."""

    function: str
    version: str
    url: str  # base URL the gateway can reach, e.g. http://10.0.0.5:8080
    ready: bool  # the runtime's /readyz answered 200 (or the platform's readiness says so)
    draining: bool = False  # terminating: never send new requests
    id: str = ""  # container id, pod name, or process id


class PlatformError(Exception):
    """The platform could not do what was asked; the message is meant for the user."""


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
        """Ask for ``replicas`` copies of one version (0 stops them all). Returns without waiting."""
        ...

    def desired(self, function: str, version: str) -> int:
        """The replica count last asked for."""
        ...

    def logs(self, function: str, *, tail: int = 100) -> list[str]:
        """Recent log lines of the function's replicas."""
        ...

"""The ``docker`` target as data: its settings, the replica containers, and what each version needs
started or stopped. The plans (``replica_spec``, ``plan_version``) are pure functions, tested by value;
``DockerSettings.load`` reads ``fn.toml`` and the environment, ``replica_access`` the store and this
process's storage credentials; :mod:`fnserve.docker.platform` carries them out.

Every replica is a container of the version's image on the target's private bridge network, with no
published port (the gateway reaches it at its address on that network), labelled with the project,
function, version and a digest of what it runs. A version whose image or checkpoint changed is
rolled: new containers start first, and the old ones drain only as the new ones turn ready.

>>> old, new = Member("a", current=False, ready=True), Member("b", current=True, ready=False)
>>> plan_version([old, new], want=1)                 # the new one is not ready yet: keep the old
Plan(start=0, stop=())
>>> plan_version([old, Member("b", current=True, ready=True)], want=1)
Plan(start=0, stop=('a',))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fnserve.docker.containers import TMPFS, StoreAccess, store_access
from fnserve.docker_engine import ContainerSpec
from fnserve.gateway.platform import PlatformError, VersionDeployment
from fnserve.images import BuildError
from fnserve.images.labels import (
    BAKED_LABEL,
    FUNCTION_LABEL,
    PROJECT_LABEL,
    ROLE_LABEL,
    SPEC_LABEL,
    STANDBY_LABEL,
    VERSION_LABEL,
)
from fnserve.images.plan import CONTAINER_PORT
from fnserve.project import ConfigError, Layers
from fnserve.runtime.redact import redact_url
from fnserve.runtime.settings import Settings

PORT = CONTAINER_PORT
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")  # what Docker accepts as a network or name


@dataclass(frozen=True)
class DockerSettings:
    network: str = "fnserve"  # the private bridge network of replicas and the gateway
    gateway_name: str = "fnserve-gateway"  # the gateway's container
    gateway_image: str = ""  # "" = fnserve/gateway built from this fnserve (`fn build --gateway`)

    @classmethod
    def load(cls, project_dir: Path, environ: Mapping[str, str]) -> DockerSettings:
        """``FNSERVE_DOCKER_<KEY>`` > ``[docker]`` of fn.toml > default (the one rule of
        :class:`~fnserve.project.Layers`; no flags); a ``ConfigError`` if bad.

        >>> DockerSettings.load(Path("/nonexistent"), {"FNSERVE_DOCKER_NETWORK": "ml"}).network
        'ml'
        """
        layers = Layers.read(project_dir, environ)
        values = {
            f.name: layers.pick(f"docker_{f.name}", f.default, section="docker", toml_key=f.name)
            for f in dataclasses.fields(cls)
        }
        settings = cls(**values)
        for key in ("network", "gateway_name"):
            if not _NAME_RE.match(getattr(settings, key)):
                raise ConfigError(f"setting docker {key} {getattr(settings, key)!r}: letters, digits, '_.-'")
        return settings


def project_id(project_dir: Path) -> str:
    """A short, stable id of the project folder, for labels (paths are awkward label values)."""
    return hashlib.sha256(str(project_dir.resolve()).encode()).hexdigest()[:12]


def spec_digest(version: VersionDeployment) -> str:
    """What a version's containers run, as a digest: a change of it rolls the version."""
    text = json.dumps({"image": version.image, "checkpoint": version.checkpoint_version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def replica_spec(
    function: str,
    label: str,
    version: VersionDeployment,
    access: StoreAccess,
    *,
    name: str,
    network: str,
    project: str,
    drain_timeout_s: float,
    standby: bool = False,
) -> ContainerSpec:
    """One replica: the runtime on port 8080 of its network address, read-only, /tmp on tmpfs.
    ``standby``: a warm pool's, which loads its model only when claimed (fnserve.gateway.warmpool).

    >>> spec = replica_spec("recs", "2", VersionDeployment("fnserve/recs:ab12", 100, "7"), StoreAccess(),
    ...                     name="fnserve-recs-2-x", network="fnserve", project="p", drain_timeout_s=20)
    >>> spec.environment["FNSERVE_CHECKPOINT_VERSION"], spec.ports, spec.labels[VERSION_LABEL]
    ('7', {}, '2')
    """
    env = {
        **access.environment,
        "FNSERVE_HOST": "0.0.0.0",
        "FNSERVE_PORT": str(PORT),
        "FNSERVE_DRAIN_TIMEOUT_S": f"{drain_timeout_s:g}",
    }
    if version.checkpoint_version != "latest":
        env["FNSERVE_CHECKPOINT_VERSION"] = version.checkpoint_version
    if standby:
        env["FNSERVE_STANDBY"] = "1"
    return ContainerSpec(
        image=version.image,
        name=name,
        environment=env,
        mounts=access.mounts,
        tmpfs=TMPFS,
        read_only=True,
        network=network,
        labels={
            ROLE_LABEL: "replica",
            PROJECT_LABEL: project,
            FUNCTION_LABEL: function,
            VERSION_LABEL: label,
            SPEC_LABEL: spec_digest(version),
            **({STANDBY_LABEL: "true"} if standby else {}),
        },
    )


def replica_access(
    settings: Settings, image_labels: Mapping[str, str], network: str, environ: Mapping[str, str]
) -> StoreAccess:
    """How replicas of an image reach the checkpoint store: not at all when it is baked in; a
    ``file://`` store mounted read-only; others by URL, with the storage credentials of ``environ``.
    A :class:`PlatformError` (422) says why not."""
    if image_labels.get(BAKED_LABEL):
        return StoreAccess()
    try:
        access = store_access(settings.store, settings.storage_options, environ, writable=False)
    except BuildError as exc:
        raise PlatformError(str(exc), status=422) from None
    if access.loopback:
        raise PlatformError(
            f"the store {redact_url(settings.store)} has its endpoint on this machine's loopback, which "
            f"containers on the {network} network cannot reach: use an address they can reach, or bake the "
            "checkpoint into the image (fn build --bake-checkpoint)",
            status=422,
        )
    return access


@dataclass(frozen=True)
class Member:
    """A running, not draining replica of one version, as the planner sees it."""

    id: str
    current: bool  # runs the version's current spec
    ready: bool  # its /readyz answered 200 at the last probe
    created: int = 0  # seconds since the epoch


@dataclass(frozen=True)
class Plan:
    start: int  # new containers of the current spec
    stop: tuple[str, ...]  # containers to drain


def plan_version(members: Sequence[Member], want: int) -> Plan:
    """Bring one version to ``want`` replicas of its current spec without dropping below ``want`` ready.

    Containers of an older spec are kept while the current ones are not ready yet (a rolling update
    with all the new replicas surging at once); surplus ones go not-ready first, then newest first.

    >>> plan_version([Member("a", True, True), Member("b", True, False)], want=1)
    Plan(start=0, stop=('b',))
    >>> plan_version([Member("a", False, True), Member("b", False, True)], want=2)
    Plan(start=2, stop=())
    """
    fresh = [m for m in members if m.current]
    old = [m for m in members if not m.current]
    surplus = sorted(fresh, key=lambda m: (m.ready, -m.created))[: max(0, len(fresh) - want)]
    ready_fresh = sum(1 for m in fresh if m.ready and m not in surplus)
    keep_old = max(0, want - ready_fresh)
    by_use = sorted(old, key=lambda m: (not m.ready, -m.created))  # ready ones, newest first, stay
    stop = [m.id for m in surplus] + [m.id for m in by_use[keep_old:]]
    return Plan(start=max(0, want - len(fresh)), stop=tuple(stop))

"""What the Kubernetes objects of a function are made from: parameter bundles, as data.

:class:`K8sSettings` are the environment's (``fn.toml`` ``[k8s]``, ``FNSERVE_K8S_*``, flags);
:class:`FunctionSpec` is one function's (its ``function.toml`` and the project settings the
runtime needs in the cluster). The spec is stored with the deployment state, so the gateway,
which has no project folder, renders new versions exactly as ``fn deploy`` would.

    # functions/recs/function.toml
    [resources]
    cpu = "1"              # CPU request (cores): what the HPA's utilization is measured against
    memory = "2Gi"         # memory request and limit
    cpu_limit = "2"        # optional: no CPU limit unless set (throttling adds latency)
    gpus = 0               # nvidia.com/gpu
    cache = "4Gi"          # size of the checkpoint cache (an emptyDir)
    [train]
    schedule = "0 3 * * *" # a training CronJob (see fnserve.k8s.jobs), checked as everywhere

>>> Resources.from_mapping({"cpu": 0.5, "memory": "2Gi"}).cpu
'500m'
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fnserve.gateway.schedule import train_table
from fnserve.project import DEFAULT_PORT, ConfigError, Layers
from fnserve.runtime.settings import Settings

_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
_LOCAL_SCHEMES = ("", "file", "memory")
CACHE_DIR = "/var/cache/fnserve"  # the checkpoint cache's emptyDir inside a function's pods
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


def quantity(what: str, value: Any, *, memory: bool = False) -> str:
    """A Kubernetes quantity string from ``value`` (numbers are cores or bytes), checked."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{what} must be a quantity like '500m', '2' or '2Gi', got {value!r}")
    if isinstance(value, str):
        text = value
    elif memory:
        text = str(int(value))
    else:
        millis = round(value * 1000)
        text = str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    if not _QUANTITY.match(text):
        raise ValueError(f"{what} {value!r} is not a Kubernetes quantity like '500m', '2' or '2Gi'")
    if memory and text.endswith("m"):
        raise ValueError(f"{what} {value!r} is in millibytes: write Mi (mebibytes), e.g. '512Mi'")
    return text


@dataclass(frozen=True)
class Resources:
    cpu: str = "500m"  # CPU request; the HPA's utilization target is a share of it
    memory: str = "1Gi"  # memory request and limit: a model that outgrows it is restarted, not slowed
    cpu_limit: str | None = None  # None: no CPU limit, so a busy replica is not throttled
    gpus: int = 0  # nvidia.com/gpu (requests equal limits for extended resources)
    cache: str = "4Gi"  # size limit of the checkpoint cache emptyDir

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> Resources:
        unknown = set(table) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"[resources]: unknown setting(s) {sorted(unknown)}")
        gpus = table.get("gpus", 0)
        if type(gpus) is not int or gpus < 0:
            raise ValueError(f"[resources] gpus must be a whole number, got {gpus!r}")
        limit = table.get("cpu_limit")
        return cls(
            cpu=quantity("[resources] cpu", table.get("cpu", cls.cpu)),
            memory=quantity("[resources] memory", table.get("memory", cls.memory), memory=True),
            cpu_limit=None if limit is None else quantity("[resources] cpu_limit", limit),
            gpus=gpus,
            cache=quantity("[resources] cache", table.get("cache", cls.cache), memory=True),
        )


@dataclass(frozen=True)
class K8sSettings:
    namespace: str = ""  # "" = the kubeconfig context's namespace (in a pod: its own), else default
    context: str = ""  # kubeconfig context; "" = the current one
    secret: str = ""  # a Secret whose keys become the pods' environment (store credentials)
    gateway_image: str = "fnserve/gateway:latest"  # the image `fn gateway` runs from in the cluster
    gateway_service_type: str = "ClusterIP"  # how the gateway's Service is exposed
    image_pull_policy: str = "IfNotPresent"

    @classmethod
    def from_layers(cls, layers: Layers) -> K8sSettings:
        """``--<key>`` flags > ``FNSERVE_K8S_<KEY>`` > ``[k8s]`` of fn.toml > default (one rule:
        :class:`~fnserve.project.Layers`); flags are given by their plain names (``namespace``)."""
        prefixed = Layers({f"k8s_{k}": v for k, v in layers.flags.items()}, layers.environ, layers.config)
        values = {
            f.name: prefixed.pick(f"k8s_{f.name}", f.default, section="k8s", toml_key=f.name)
            for f in dataclasses.fields(cls)
        }
        settings = cls(**values)
        if settings.image_pull_policy not in PULL_POLICIES:
            raise ConfigError(f"setting k8s image_pull_policy must be one of {', '.join(PULL_POLICIES)}")
        if settings.gateway_service_type not in SERVICE_TYPES:
            raise ConfigError(f"setting k8s gateway_service_type must be one of {', '.join(SERVICE_TYPES)}")
        return settings


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    namespace: str
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)  # runtime settings as FNSERVE_* variables
    secret: str | None = None  # envFrom: storage credentials
    drain_timeout_s: float = 20.0  # the runtime's SIGTERM drain; the pod's grace period exceeds it
    cpu_target_percent: int = 70  # the HPA's average CPU utilization target
    image_pull_policy: str = "IfNotPresent"
    schedule: str | None = None  # cron schedule of the training CronJob; None: none
    training_data: str | None = None  # training data URL for the CronJob

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FunctionSpec:
        try:
            return cls(**{**data, "resources": Resources(**data.get("resources", {}))})
        except TypeError as exc:
            raise ValueError(f"a stored function spec does not fit this fnserve: {exc}") from None


def function_spec(
    settings: Settings, k8s: K8sSettings, namespace: str, name: str, table: Mapping[str, Any]
) -> FunctionSpec:
    """A function's spec from the project settings and its parsed ``function.toml``."""
    if not isinstance(table.get("resources", {}), Mapping):
        raise ValueError(f"functions/{name}/function.toml: [resources] must be a table")
    schedule, training_data = train_table(table, f"functions/{name}/function.toml")
    env = {
        "FNSERVE_HOST": "0.0.0.0",
        "FNSERVE_PORT": str(DEFAULT_PORT),
        "FNSERVE_CACHE": CACHE_DIR,
        "FNSERVE_DRAIN_TIMEOUT_S": str(settings.drain_timeout_s),
        "FNSERVE_RELOAD_INTERVAL_S": str(settings.reload_interval_s),
        "FNSERVE_MAX_BODY_BYTES": str(settings.max_body_bytes),
    }
    if not is_local(settings.store):  # a store on this machine: the image's own (baked) store serves
        env["FNSERVE_STORE"] = settings.store
        if settings.storage_options:
            env["FNSERVE_STORE_OPTIONS"] = json.dumps(dict(settings.storage_options), sort_keys=True)
    return FunctionSpec(
        name=name,
        namespace=namespace,
        resources=Resources.from_mapping(table.get("resources", {})),
        env=env,
        secret=k8s.secret or None,
        drain_timeout_s=settings.drain_timeout_s,
        image_pull_policy=k8s.image_pull_policy,
        schedule=schedule.expression if schedule else None,
        training_data=training_data,
    )


def is_local(url: str) -> bool:
    """A store URL only this machine can reach (a cluster's pods cannot)."""
    return urlsplit(url).scheme in _LOCAL_SCHEMES

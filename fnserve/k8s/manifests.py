"""Every Kubernetes object of a deployed function, as plain dicts from pure functions.

Per version ``v`` of function ``f`` (versions are separate Deployments, so two serve at once):

* Deployment ``fn-f-v`` (:mod:`fnserve.k8s.workload`);
* headless Service ``fn-f-v``: its EndpointSlices list the version's pods with their
  ready/serving/terminating conditions — what the gateway balances over (it connects to pod IPs
  itself, so no cluster IP or kube-proxy hop sits in the prediction path);
* HorizontalPodAutoscaler ``fn-f-v`` on CPU, between ``max(1, min_replicas)`` and ``max_replicas``;
* PodDisruptionBudget ``fn-f-v``: node drains evict one replica at a time.

Per function: a ClusterIP Service ``fn-f`` over every ready pod of every version (direct in-cluster
access; it bypasses splits and waking from zero — callers should use the gateway), a ConfigMap
``fn-f`` with the deployment state the gateway routes by and the spec new versions are rendered
from, and the training CronJob when ``[train] schedule`` is set.

Scale to zero and the HPA: Kubernetes' HPA cannot go below one replica (minReplicas 0 needs an
alpha feature gate), and it stops acting on a Deployment scaled to 0 (condition ScalingActive
False, reason ScalingDisabled). So the gateway owns 0 <-> 1: it scales an idle version to 0 and
back up on the next request. Above zero it raises the HPA's minReplicas to its own in-flight
based count, so the replicas are the larger of the gateway's wish (queue depth) and the HPA's
(CPU), and the two never fight over ``spec.replicas``.

>>> from fnserve.gateway.platform import FunctionDeployment, VersionDeployment
>>> d = FunctionDeployment("recs", {"3": VersionDeployment("fnserve/recs:ab12")})
>>> [f"{o['kind']}/{o['metadata']['name']}" for o in function_objects(FunctionSpec("recs", "ml"), d)]
... # doctest: +NORMALIZE_WHITESPACE
['ConfigMap/fn-recs', 'Service/fn-recs', 'Deployment/fn-recs-v3', 'Service/fn-recs-v3',
 'HorizontalPodAutoscaler/fn-recs-v3', 'PodDisruptionBudget/fn-recs-v3']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fnserve.gateway.platform import FunctionDeployment, Scaling
from fnserve.k8s import names
from fnserve.k8s.jobs import TrainingJob, training_cronjob
from fnserve.k8s.spec import FunctionSpec
from fnserve.k8s.workload import PORT, version_deployment

STATE_KEY = "deployment.json"  # FunctionDeployment.to_dict(): versions, weights, scaling
SPEC_KEY = "function.json"  # FunctionSpec.to_dict(): what version objects are rendered from
Objects = list[dict[str, Any]]


def function_objects(
    spec: FunctionSpec, deployment: FunctionDeployment, *, floors: Mapping[str, int] | None = None
) -> Objects:
    """Every object of the function, in apply order. ``floors``: the gateway's current replica
    floor per version (the live HPA minReplicas), kept so that re-applying does not lower it."""
    objects = [state_configmap(spec, deployment), function_service(spec)]
    for version in deployment.versions:
        objects += version_objects(spec, deployment, version, floor=(floors or {}).get(version, 0))
    cronjob = training(spec, deployment)
    return objects + ([cronjob] if cronjob else [])


def version_objects(
    spec: FunctionSpec, deployment: FunctionDeployment, version: str, *, floor: int = 0
) -> Objects:
    return [
        version_deployment(spec, version, deployment.versions[version]),
        version_service(spec, version),
        autoscaler(spec, version, deployment.scaling, floor=floor),
        disruption_budget(spec, version),
    ]


def state_configmap(spec: FunctionSpec, deployment: FunctionDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            names.function_name(spec.name), spec, names.function_labels(spec.name, "state")
        ),
        "data": {
            STATE_KEY: json.dumps(deployment.to_dict(), sort_keys=True),
            SPEC_KEY: json.dumps(spec.to_dict(), sort_keys=True),
        },
    }


def function_service(spec: FunctionSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            names.function_name(spec.name), spec, names.function_labels(spec.name, "function")
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": {names.FUNCTION_LABEL: spec.name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def version_service(spec: FunctionSpec, version: str) -> dict[str, Any]:
    """Headless: no virtual IP, only EndpointSlices (labelled like the Service) for the gateway."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            names.version_name(spec.name, version), spec, names.version_labels(spec.name, version)
        ),
        "spec": {
            "clusterIP": "None",
            "selector": names.version_selector(spec.name, version),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(spec: FunctionSpec, version: str, scaling: Scaling, *, floor: int = 0) -> dict[str, Any]:
    """CPU autoscaling above the gateway's floor; scale-downs wait out the stable window."""
    name = names.version_name(spec.name, version)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(name, spec, names.version_labels(spec.name, version)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": hpa_min(scaling, floor),
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": spec.cpu_target_percent},
                    },
                }
            ],
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": round(scaling.stable_window_s)},
                "scaleUp": {"stabilizationWindowSeconds": 0},
            },
        },
    }


def hpa_min(scaling: Scaling, floor: int = 0) -> int:
    """The HPA's minReplicas: never 0 (not allowed without an alpha gate), never above max."""
    return min(max(1, scaling.min_replicas, floor), scaling.max_replicas)


def disruption_budget(spec: FunctionSpec, version: str) -> dict[str, Any]:
    """One replica at a time may be evicted; a single replica may be too, so drains never block."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            names.version_name(spec.name, version), spec, names.version_labels(spec.name, version)
        ),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.version_selector(spec.name, version)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",  # a crash-looping pod never blocks a drain
        },
    }


def training(spec: FunctionSpec, deployment: FunctionDeployment) -> dict[str, Any] | None:
    """The training CronJob when a schedule is set, from the image of the most-weighted version."""
    if not spec.schedule:
        return None
    image = max(deployment.versions.values(), key=lambda v: v.weight).image
    store = spec.env.get("FNSERVE_STORE")
    if store is None:
        raise ValueError(
            f"{spec.name}: [train] schedule needs a checkpoint store the cluster can reach "
            "(fn.toml [store] root = 's3://...'), not one on this machine"
        )
    options = json.loads(spec.env.get("FNSERVE_STORE_OPTIONS", "{}"))
    job = TrainingJob(
        function=spec.name,
        image=image,
        store=store,
        data=spec.training_data,
        store_options=options,
        secret=spec.secret,
        namespace=spec.namespace,
    )
    cronjob = training_cronjob(job, schedule=spec.schedule)
    cronjob["metadata"]["labels"][names.FUNCTION_LABEL] = spec.name
    return cronjob


def _metadata(name: str, spec: FunctionSpec, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": spec.namespace, "labels": labels}

"""One version of a function as a ``apps/v1`` Deployment: the pods that serve it.

Zero dropped requests across a rollout or a scale-down come from three things together:

* readiness is the runtime's ``/readyz`` (a model loaded, not shutting down), so a pod gets
  traffic only once it can answer, and a rolling update (maxUnavailable 0, maxSurge 1) removes
  an old pod only after its replacement is ready;
* a ``preStop`` pause lets endpoints, kube-proxy and the gateway stop sending to a terminating
  pod before it is told to stop; then SIGTERM starts the runtime's drain (readiness off, finish
  what is in flight, exit);
* ``terminationGracePeriodSeconds`` covers the pause plus the drain timeout, with room to spare,
  so Kubernetes never kills a pod that is still finishing requests.

>>> from fnserve.gateway.platform import VersionDeployment
>>> d = version_deployment(FunctionSpec("recs", "ml"), "3", VersionDeployment("reg/fnserve/recs:ab12"))
>>> d["metadata"]["name"], d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
('fn-recs-v3', 35)
"""

from __future__ import annotations

import math
from typing import Any

from fnserve.gateway.platform import VersionDeployment
from fnserve.k8s import names
from fnserve.k8s.spec import CACHE_DIR, FunctionSpec
from fnserve.project import DEFAULT_PORT, IMAGE_UID

PORT = DEFAULT_PORT  # the runtime's port in every function image
PRESTOP_PAUSE_S = 5  # endpoint removal reaches kube-proxy and the gateway's watch well within this
GRACE_MARGIN_S = 10  # beyond pause + drain: the interpreter's exit, a slow last response


def version_deployment(spec: FunctionSpec, version: str, deployment: VersionDeployment) -> dict[str, Any]:
    """The Deployment ``fn-<function>-<version>``. ``spec.replicas`` is left out on purpose: the
    gateway and the HPA own the count (through the scale subresource), and re-applying must not
    reset it."""
    labels = names.version_labels(spec.name, version)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.version_name(spec.name, version),
            "namespace": spec.namespace,
            "labels": labels,
        },
        "spec": {
            "selector": {"matchLabels": names.version_selector(spec.name, version)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": _pod_spec(spec, version, deployment),
            },
        },
    }


def grace_period_s(spec: FunctionSpec) -> int:
    return PRESTOP_PAUSE_S + math.ceil(spec.drain_timeout_s) + GRACE_MARGIN_S


def _pod_spec(spec: FunctionSpec, version: str, deployment: VersionDeployment) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,  # the runtime never calls the Kubernetes API
        "enableServiceLinks": False,  # no *_SERVICE_HOST variables from every Service around
        "terminationGracePeriodSeconds": grace_period_s(spec),
        "securityContext": pod_security(),
        "containers": [_container(spec, version, deployment)],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "checkpoints", "emptyDir": {"sizeLimit": spec.resources.cache}},
        ],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",  # spread replicas, never block scheduling
                "labelSelector": {"matchLabels": names.version_selector(spec.name, version)},
            }
        ],
    }


def _container(spec: FunctionSpec, version: str, deployment: VersionDeployment) -> dict[str, Any]:
    env = dict(spec.env)
    if deployment.checkpoint_version != "latest":
        env["FNSERVE_CHECKPOINT_VERSION"] = deployment.checkpoint_version
    container: dict[str, Any] = {
        "name": "runtime",
        "image": deployment.image,
        "imagePullPolicy": spec.image_pull_policy,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": key, "value": value} for key, value in sorted(env.items())],
        "resources": resources(spec),
        # Starting covers the interpreter, framework imports and the first checkpoint fetch.
        "startupProbe": _probe("/healthz", period_s=2, failures=150),
        "readinessProbe": _probe("/readyz", period_s=2, failures=2),
        "livenessProbe": _probe("/healthz", period_s=10, failures=3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_PAUSE_S)]}}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "checkpoints", "mountPath": CACHE_DIR},
        ],
    }
    if spec.secret:
        container["envFrom"] = [{"secretRef": {"name": spec.secret}}]
    return container


def resources(spec: FunctionSpec) -> dict[str, Any]:
    """Requests from the function's settings; memory limited at its request, CPU only if asked."""
    r = spec.resources
    requests: dict[str, Any] = {"cpu": r.cpu, "memory": r.memory}
    limits: dict[str, Any] = {"memory": r.memory}
    if r.cpu_limit:
        limits["cpu"] = r.cpu_limit
    if r.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(r.gpus)
    return {"requests": requests, "limits": limits}


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "fsGroup": IMAGE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _probe(path: str, *, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }

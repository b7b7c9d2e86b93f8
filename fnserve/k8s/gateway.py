"""The gateway in the cluster: its Deployment and Service, and the RBAC it needs, as data.

One gateway per namespace routes every function there (``fn gateway`` with the ``k8s`` target).
Its ServiceAccount gets a namespaced Role with exactly what the platform calls: read and scale
Deployments (the scale subresource), move the HPA's floor, read EndpointSlices and pods (which
replicas are ready, their logs), and keep the deployment state ConfigMaps. Because the Platform
contract lets the admin API add versions and delete functions, it may also create, patch and
delete fnserve's Deployments, Services, HPAs and PDBs — in that namespace only.

The admin token comes from the Secret ``fnserve-gateway`` (key ``token``), created once by
``fn deploy`` and never rendered into YAML.

>>> [o["kind"] for o in gateway_objects(GatewaySpec(namespace="ml"))]
['ServiceAccount', 'Role', 'RoleBinding', 'Deployment', 'Service']
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fnserve.k8s import names
from fnserve.k8s.workload import container_security, pod_security
from fnserve.project import DEFAULT_PORT

PORT = DEFAULT_PORT  # the gateway's, inside its pod
TOKEN_SECRET = names.GATEWAY  # Secret holding the admin API token, key "token"


def _rule(group: str, resource: str, *verbs: str) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}


RULES: list[dict[str, Any]] = [
    _rule("apps", "deployments", "get", "list", "watch", "create", "patch", "update", "delete"),
    _rule("apps", "deployments/scale", "get", "patch", "update"),
    _rule("autoscaling", "horizontalpodautoscalers", "get", "list", "create", "patch", "update", "delete"),
    _rule("policy", "poddisruptionbudgets", "get", "list", "create", "patch", "delete"),
    _rule("", "services", "get", "list", "create", "patch", "delete"),
    _rule("", "configmaps", "get", "list", "watch", "create", "update", "patch", "delete"),
    _rule("discovery.k8s.io", "endpointslices", "get", "list", "watch"),
    _rule("", "pods", "get", "list", "watch"),
    _rule("", "pods/log", "get"),
    _rule("batch", "cronjobs", "get", "list", "create", "patch", "delete"),
]


@dataclass(frozen=True)
class GatewaySpec:
    namespace: str
    image: str = "fnserve/gateway:latest"
    service_type: str = "ClusterIP"  # LoadBalancer or NodePort to reach it from outside the cluster
    auth: str = "open"  # prediction routes: "open", or "token" like the admin API
    image_pull_policy: str = "IfNotPresent"
    cpu: str = "500m"
    memory: str = "512Mi"
    store: str | None = None  # the checkpoint store, where rollouts notice new checkpoints (None: none)
    store_options: str | None = None  # FNSERVE_STORE_OPTIONS (JSON), as the functions get it
    secret: str | None = None  # envFrom: the store's credentials, the functions' Secret


def gateway_objects(spec: GatewaySpec) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding, Deployment and Service, in apply order."""

    def meta() -> dict[str, Any]:
        return {"name": names.GATEWAY, "namespace": spec.namespace, "labels": names.gateway_labels()}

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(),
            "rules": copy.deepcopy(RULES),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.GATEWAY},
            "subjects": [{"kind": "ServiceAccount", "name": names.GATEWAY, "namespace": spec.namespace}],
        },
        _deployment(spec, meta()),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(),
            "spec": {
                "type": spec.service_type,
                "selector": {names.NAME_LABEL: names.GATEWAY, names.COMPONENT_LABEL: "gateway"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]


def _deployment(spec: GatewaySpec, meta: dict[str, Any]) -> dict[str, Any]:
    env = [
        {"name": "FNSERVE_GATEWAY_HOST", "value": "0.0.0.0"},
        {"name": "FNSERVE_GATEWAY_PORT", "value": str(PORT)},
        {"name": "FNSERVE_GATEWAY_TARGET", "value": "k8s"},
        {"name": "FNSERVE_GATEWAY_AUTH", "value": spec.auth},
        {
            "name": "FNSERVE_GATEWAY_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}},
        },
        {"name": "FNSERVE_K8S_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if spec.store:  # rollouts: the gateway asks the store for each function's new checkpoints
        env.append({"name": "FNSERVE_STORE", "value": spec.store})
        if spec.store_options:
            env.append({"name": "FNSERVE_STORE_OPTIONS", "value": spec.store_options})
    probe = {"httpGet": {"port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}
    container = {
        "name": "gateway",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["python", "-m", "fnserve.cli", "gateway"],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": spec.cpu, "memory": spec.memory},
            "limits": {"memory": spec.memory},
        },
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}},
        "livenessProbe": {**probe, "httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if spec.secret:  # the store's credentials, as the functions' replicas get them
        container["envFrom"] = [{"secretRef": {"name": spec.secret}}]
    selector = {names.NAME_LABEL: names.GATEWAY, names.COMPONENT_LABEL: "gateway"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            # One gateway: it holds the scale-to-zero and autoscaling decisions; a second one would
            # make them twice. A rollout briefly runs two, which only repeat each other's calls.
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": names.gateway_labels()},
                "spec": {
                    "serviceAccountName": names.GATEWAY,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }

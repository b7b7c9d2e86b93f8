"""The Kubernetes objects of a function, by value: pure functions of parameter bundles."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fnserve.gateway.platform import FunctionDeployment, Scaling, VersionDeployment
from fnserve.k8s import names
from fnserve.k8s.manifests import (
    SPEC_KEY,
    STATE_KEY,
    autoscaler,
    disruption_budget,
    function_objects,
    function_service,
    state_configmap,
    version_service,
)
from fnserve.k8s.spec import FunctionSpec, Resources
from fnserve.k8s.workload import version_deployment

SPEC = FunctionSpec(
    "recs",
    "ml",
    Resources(cpu="1", memory="2Gi", cpu_limit="2", gpus=1, cache="8Gi"),
    env={"FNSERVE_STORE": "s3://models/ckpt", "FNSERVE_PORT": "8080"},
    secret="store-credentials",
    drain_timeout_s=25,
)
V3 = VersionDeployment("reg.example/fnserve/recs:ab12", weight=90)
V4 = VersionDeployment("reg.example/fnserve/recs:cd34", weight=10, checkpoint_version="7")
DEPLOYMENT = FunctionDeployment("recs", {"3": V3, "v4": V4}, Scaling(min_replicas=0, max_replicas=6))


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_each_version_is_its_own_deployment_with_the_function_and_version_labels() -> None:
    d3, d4 = (version_deployment(SPEC, label, DEPLOYMENT.versions[label]) for label in ("3", "v4"))
    assert (d3["metadata"]["name"], d4["metadata"]["name"]) == ("fn-recs-v3", "fn-recs-v4")
    assert d3["metadata"]["namespace"] == "ml"
    labels = d3["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "recs",
        "app.kubernetes.io/component": "function",
        "app.kubernetes.io/managed-by": "fnserve",
        "fnserve.dev/function": "recs",
        "fnserve.dev/version": "3",
    }
    assert d3["spec"]["selector"]["matchLabels"] == {
        "fnserve.dev/function": "recs",
        "fnserve.dev/version": "3",
    }
    assert "replicas" not in d3["spec"]  # the gateway and the HPA own the count


def test_probes_hit_the_runtime_endpoints_on_its_port() -> None:
    c = container(version_deployment(SPEC, "3", V3))
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # A slow model load gets minutes before liveness may restart the pod.
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 180


def test_resources_come_from_the_function_settings() -> None:
    assert container(version_deployment(SPEC, "3", V3))["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": "1"},
    }
    plain = container(version_deployment(FunctionSpec("recs", "ml"), "3", V3))["resources"]
    assert plain == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}


def test_rolling_update_never_removes_a_ready_pod_first_and_the_drain_fits_the_grace_period() -> None:
    d = version_deployment(SPEC, "3", V3)
    assert d["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = d["spec"]["template"]["spec"]
    pause = int(container(d)["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert container(d)["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pause >= 3
    assert pod["terminationGracePeriodSeconds"] > pause + SPEC.drain_timeout_s


def test_pods_run_non_root_on_a_read_only_root_with_tmp_and_cache_volumes() -> None:
    d = version_deployment(SPEC, "3", V3)
    pod, c = d["spec"]["template"]["spec"], container(d)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", "/var/cache/fnserve": "checkpoints"}
    volumes = {v["name"]: v["emptyDir"]["sizeLimit"] for v in pod["volumes"]}
    assert volumes == {"tmp": "1Gi", "checkpoints": "8Gi"}


def test_the_runtime_environment_pins_a_checkpoint_only_when_asked() -> None:
    env3 = {e["name"]: e["value"] for e in container(version_deployment(SPEC, "3", V3))["env"]}
    env4 = {e["name"]: e["value"] for e in container(version_deployment(SPEC, "v4", V4))["env"]}
    assert env3["FNSERVE_STORE"] == "s3://models/ckpt"
    assert "FNSERVE_CHECKPOINT_VERSION" not in env3
    assert env4["FNSERVE_CHECKPOINT_VERSION"] == "7"
    assert container(version_deployment(SPEC, "3", V3))["envFrom"] == [
        {"secretRef": {"name": "store-credentials"}}
    ]
    assert container(version_deployment(SPEC, "3", V3))["image"] == V3.image


def test_services_a_cluster_ip_for_the_function_and_a_headless_one_per_version() -> None:
    function = function_service(SPEC)
    assert function["metadata"]["name"] == "fn-recs"
    assert function["spec"]["selector"] == {"fnserve.dev/function": "recs"}
    assert function["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    version = version_service(SPEC, "3")
    assert version["metadata"]["name"] == "fn-recs-v3"
    assert version["spec"]["clusterIP"] == "None"
    assert version["spec"]["selector"] == {"fnserve.dev/function": "recs", "fnserve.dev/version": "3"}
    assert version["metadata"]["labels"]["fnserve.dev/version"] == "3"  # EndpointSlices inherit it


@pytest.mark.parametrize(
    ("scaling", "floor", "expected"),
    [
        (Scaling(min_replicas=0, max_replicas=6), 0, 1),  # HPA cannot go to 0: the gateway does
        (Scaling(min_replicas=2, max_replicas=6), 0, 2),
        (Scaling(min_replicas=0, max_replicas=6), 4, 4),  # the gateway's floor is kept
        (Scaling(min_replicas=0, max_replicas=3), 9, 3),
    ],
)
def test_autoscaler_on_cpu_between_the_floor_and_max(scaling: Scaling, floor: int, expected: int) -> None:
    hpa = autoscaler(SPEC, "3", scaling, floor=floor)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "fn-recs-v3",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (expected, scaling.max_replicas)
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60


def test_disruption_budget_lets_one_replica_go_at_a_time() -> None:
    pdb = disruption_budget(SPEC, "3")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == {
        "fnserve.dev/function": "recs",
        "fnserve.dev/version": "3",
    }


def test_state_configmap_round_trips_the_deployment_and_the_spec() -> None:
    cm = state_configmap(SPEC, DEPLOYMENT)
    assert cm["metadata"]["name"] == "fn-recs"
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "state"
    assert FunctionDeployment.from_dict(json.loads(cm["data"][STATE_KEY])) == DEPLOYMENT
    assert FunctionSpec.from_dict(json.loads(cm["data"][SPEC_KEY])) == SPEC


def test_function_objects_in_apply_order_and_the_training_cronjob_only_with_a_schedule() -> None:
    kinds = [o["kind"] for o in function_objects(SPEC, DEPLOYMENT)]
    assert kinds == ["ConfigMap", "Service"] + ["Deployment", "Service", "HorizontalPodAutoscaler",
                                                "PodDisruptionBudget"] * 2  # fmt: skip
    scheduled = FunctionSpec("recs", "ml", env=SPEC.env, schedule="0 3 * * *")
    cronjob = function_objects(scheduled, DEPLOYMENT)[-1]
    assert (cronjob["kind"], cronjob["spec"]["schedule"]) == ("CronJob", "0 3 * * *")
    assert cronjob["metadata"]["labels"]["fnserve.dev/function"] == "recs"
    job = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == V3.image  # the most-weighted version's image trains


def test_a_schedule_needs_a_store_the_cluster_can_reach() -> None:
    with pytest.raises(ValueError, match="store the cluster can reach"):
        function_objects(FunctionSpec("recs", "ml", schedule="0 3 * * *"), DEPLOYMENT)


def test_names_are_dns_labels_and_lossy_mappings_stay_distinct() -> None:
    assert names.version_name("recs", "canary") == "fn-recs-canary"
    a, b = names.version_name("recs", "v1.2"), names.version_name("recs", "v1_2")
    assert a != b and a.startswith("fn-recs-v1-2-") and len(a) <= 63
    assert len(names.version_name("r" * 63, "v" * 40)) == 63
    with pytest.raises(ValueError, match="cannot be a Kubernetes label"):
        names.version_labels("recs", "v3-")

"""Every object fnserve renders passes the Kubernetes schemas in strict mode (no unknown field,
every type right) for a current Kubernetes version; the gateway's objects and RBAC by value;
the parameter bundles' parsing."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from fnserve.gateway.platform import FunctionDeployment, Scaling, VersionDeployment
from fnserve.k8s.gateway import GatewaySpec, gateway_objects
from fnserve.k8s.jobs import TrainingJob, training_cronjob, training_job
from fnserve.k8s.manifests import function_objects
from fnserve.k8s.project import load_k8s_settings
from fnserve.k8s.spec import FunctionSpec, Resources, quantity

KUBERNETES_VERSION = "1.37"  # the newest schemas kubernetes-validate ships
ENV = {"FNSERVE_STORE": "gs://models/ckpt", "FNSERVE_STORE_OPTIONS": '{"token": "cloud"}'}
SPECS = {
    "defaults": FunctionSpec("recs", "default"),
    "everything": FunctionSpec(
        "Tagger.v2",
        "ml-prod",
        Resources(cpu="250m", memory="512Mi", cpu_limit="1", gpus=2, cache="20Gi"),
        env=ENV,
        secret="gcs",
        drain_timeout_s=0,
        cpu_target_percent=55,
        image_pull_policy="Always",
        schedule="@daily",
        training_data="gs://data/photos.parquet",
    ),
}
DEPLOYMENTS = {
    "one": FunctionDeployment("recs", {"1": VersionDeployment("fnserve/recs:latest")}),
    "split": FunctionDeployment(
        "Tagger.v2",
        {
            "3": VersionDeployment("reg:5000/t/fnserve/tagger:ab", weight=90),
            "canary_4.1": VersionDeployment(
                "reg:5000/t/fnserve/tagger:cd", weight=10, checkpoint_version="12"
            ),
        },
        Scaling(min_replicas=0, max_replicas=20, stable_window_s=300),
    ),
}


def rendered() -> list[tuple[str, dict[str, Any]]]:
    objects = [
        (f"{spec_id}/{dep_id}", obj)
        for spec_id, spec in SPECS.items()
        for dep_id, deployment in DEPLOYMENTS.items()
        for obj in function_objects(spec, deployment)
    ]
    for service_type in ("ClusterIP", "LoadBalancer"):
        gateway = GatewaySpec("ml", service_type=service_type, auth="token")
        objects += [(f"gateway/{service_type}", obj) for obj in gateway_objects(gateway)]
    with_store = GatewaySpec("ml", store="s3://models/ckpt", store_options='{"anon": false}', secret="s3")
    objects += [("gateway/store", obj) for obj in gateway_objects(with_store)]
    job = TrainingJob(
        "recs", "fnserve/recs:ab", "s3://m", data="s3://d", secret="s3", cpus=2, memory_bytes=2**31
    )
    objects += [("training", training_job(job)), ("training", training_cronjob(job, schedule="0 3 * * *"))]
    database = TrainingJob(
        "recs", "fnserve/recs:ab", "s3://m", data="postgresql://db.ml/shop?table=b", secret="db"
    )
    objects += [
        ("training-db", training_job(database)),
        ("training-db", training_cronjob(database, schedule="@daily")),
    ]
    return objects


OBJECTS = rendered()


@pytest.mark.parametrize(
    "obj", [o for _, o in OBJECTS], ids=[f"{i}-{o['kind']}-{o['metadata']['name']}" for i, o in OBJECTS]
)
def test_strictly_valid(obj: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_strict_validation_does_catch_mistakes() -> None:
    bad = function_objects(SPECS["defaults"], DEPLOYMENTS["one"])[2]
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_gateway_role_grants_what_the_platform_calls_in_its_namespace_only() -> None:
    sa, role, binding, deployment, service = gateway_objects(GatewaySpec("ml", service_type="LoadBalancer"))
    verbs = {(r["apiGroups"][0], r["resources"][0]): set(r["verbs"]) for r in role["rules"]}
    assert verbs[("apps", "deployments/scale")] == {"get", "patch", "update"}
    assert {"get", "list", "watch"} <= verbs[("apps", "deployments")]
    assert verbs[("discovery.k8s.io", "endpointslices")] == {"get", "list", "watch"}
    assert {"list", "watch"} <= verbs[("", "pods")]
    assert verbs[("", "pods/log")] == {"get"}
    assert {"get", "update", "patch"} <= verbs[("", "configmaps")]
    assert {"get", "patch"} <= verbs[("autoscaling", "horizontalpodautoscalers")]
    assert "secrets" not in {resource for _, resource in verbs}  # its token comes through env
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "ml"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "fnserve-gateway",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ml"}
    ]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "fnserve-gateway"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["FNSERVE_GATEWAY_TARGET"] == "k8s"
    assert env["FNSERVE_GATEWAY_HOST"] == "0.0.0.0"
    assert env["FNSERVE_GATEWAY_TOKEN"] == {"secretKeyRef": {"name": "fnserve-gateway", "key": "token"}}
    assert env["FNSERVE_K8S_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("value", "memory", "expected"),
    [
        (0.5, False, "500m"),
        (2, False, "2"),
        ("250m", False, "250m"),
        ("2Gi", True, "2Gi"),
        (2**30, True, "1073741824"),
    ],
)
def test_quantities(value: Any, memory: bool, expected: str) -> None:
    assert quantity("x", value, memory=memory) == expected


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"memory": "512m"}, "millibytes"),
        ({"cpu": "two"}, "not a Kubernetes quantity"),
        ({"gpus": 1.5}, "whole number"),
        ({"cpus": 2}, "unknown setting"),
    ],
)
def test_resources_refuse_mistakes_naming_the_setting(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Resources.from_mapping(table)


def test_k8s_settings_flag_over_environment_over_fn_toml(tmp_path: Any) -> None:
    (tmp_path / "fn.toml").write_text('[k8s]\nnamespace = "from-toml"\nsecret = "s3"\n')
    assert load_k8s_settings(tmp_path, {}, {}).namespace == "from-toml"
    assert load_k8s_settings(tmp_path, {"FNSERVE_K8S_NAMESPACE": "env"}, {}).namespace == "env"
    assert (
        load_k8s_settings(tmp_path, {"FNSERVE_K8S_NAMESPACE": "env"}, {"namespace": "flag"}).namespace
        == "flag"
    )
    assert load_k8s_settings(tmp_path, {}, {}).secret == "s3"
    with pytest.raises(ValueError, match="image_pull_policy"):
        load_k8s_settings(tmp_path, {"FNSERVE_K8S_IMAGE_PULL_POLICY": "Sometimes"}, {})


def test_the_gateway_reaches_the_store_for_rollouts_with_the_functions_secret() -> None:
    deployment = gateway_objects(GatewaySpec("ml", store="s3://models/ckpt", secret="s3"))[3]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FNSERVE_STORE"] == "s3://models/ckpt" and "FNSERVE_STORE_OPTIONS" not in env
    assert container["envFrom"] == [{"secretRef": {"name": "s3"}}]
    bare = gateway_objects(GatewaySpec("ml"))[3]["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in bare and "FNSERVE_STORE" not in {e["name"] for e in bare["env"]}

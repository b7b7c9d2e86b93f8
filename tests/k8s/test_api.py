"""The k8s platform's parts that need a controller or a pod (EndpointSlices, logs) and the API
adapter's edges, against the emulator: the tests play the endpoint controller."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fnserve.gateway.platform import FunctionDeployment, PlatformError, Replica, VersionDeployment
from fnserve.k8s.api import K8sApi, K8sError
from fnserve.k8s.gateway import GatewaySpec
from fnserve.k8s.platform import K8sPlatform
from fnserve.k8s.spec import FunctionSpec, Resources
from tests.support.k8s_emulator import Cluster, open_cluster

RECS = FunctionDeployment("recs", {"3": VersionDeployment("fnserve/recs:ab12")})


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with open_cluster("emulator") as opened:
        yield opened


@pytest.fixture
def platform(cluster: Cluster) -> Iterator[K8sPlatform]:
    made = K8sPlatform(cluster.api, specs=lambda name: FunctionSpec(name, "ns"))
    yield made
    made.close()


def endpoint_slice(name: str, version: str, *endpoints: tuple[str, str, dict[str, bool]]) -> dict[str, Any]:
    """What the endpoint controller writes for a version's headless Service (labels copied)."""
    labels = {"fnserve.dev/function": "recs", "fnserve.dev/version": version}
    labels["app.kubernetes.io/managed-by"] = "fnserve"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "ns", "labels": labels},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], "conditions": conditions, "targetRef": {"kind": "Pod", "name": pod}}
            for pod, ip, conditions in endpoints
        ],
    }


def eventually(read: Callable[[], list[Replica]], expected: set[tuple[str, str, bool, bool]]) -> None:
    seen: set[tuple[str, str, bool, bool]] = set()
    for _ in range(100):
        seen = {(r.version, r.url, r.ready, r.draining) for r in read()}
        if seen == expected:
            return
        time.sleep(0.05)
    assert seen == expected


def test_replicas_follow_endpoint_slices_through_the_watch(cluster: Cluster, platform: K8sPlatform) -> None:
    platform.save_state(RECS)
    assert platform.replicas("recs") == []
    starting = {"ready": False, "serving": False, "terminating": False}
    cluster.api.apply(endpoint_slice("fn-recs-v3-a", "3", ("p1", "10.0.0.1", starting)))
    eventually(lambda: platform.replicas("recs"), {("3", "http://10.0.0.1:8080", False, False)})
    ready, draining = {"ready": True}, {"ready": False, "serving": True, "terminating": True}
    cluster.api.apply(
        endpoint_slice("fn-recs-v3-a", "3", ("p1", "10.0.0.1", draining), ("p2", "10.0.0.2", ready))
    )
    eventually(
        lambda: platform.replicas("recs"),
        {("3", "http://10.0.0.1:8080", False, True), ("3", "http://10.0.0.2:8080", True, False)},
    )
    assert platform.replicas("other") == []
    cluster.api.delete("EndpointSlice", "fn-recs-v3-a")
    eventually(lambda: platform.replicas("recs"), set())


def test_replicas_without_a_watch_list_each_time(cluster: Cluster) -> None:
    cluster.api.apply(endpoint_slice("fn-recs-v3-a", "3", ("p1", "10.0.0.1", {"ready": True})))
    unwatched = K8sPlatform(cluster.api, watch=False)
    assert [(r.version, r.ready, r.id) for r in unwatched.replicas("recs")] == [("3", True, "p1")]


def test_logs_of_the_function_pods_name_version_and_pod(cluster: Cluster, platform: K8sPlatform) -> None:
    labels = {"fnserve.dev/function": "recs", "fnserve.dev/version": "3"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fn-recs-v3-x", "labels": labels}}
    cluster.api.apply(pod)
    assert cluster.emulator is not None
    cluster.emulator.emulator.pod_logs["fn-recs-v3-x"] = "loading\nlistening on http://0.0.0.0:8080\n"
    assert platform.logs("recs", tail=1) == ["3/fn-recs-v3-x | listening on http://0.0.0.0:8080"]


def test_from_a_project_the_gateway_is_applied_and_its_token_made_once(cluster: Cluster) -> None:
    made = K8sPlatform(
        cluster.api, specs=lambda n: FunctionSpec(n, "ns"), gateway=GatewaySpec("ns"), watch=False
    )
    made.save_state(RECS)
    assert cluster.emulator is not None
    assert set(cluster.emulator.objects("Role")) == {"fnserve-gateway"}
    assert set(cluster.emulator.objects("Deployment")) == {"fnserve-gateway", "fn-recs-v3"}
    token = cluster.emulator.objects("Secret")["fnserve-gateway"]["stringData"]["token"]
    assert len(token) >= 32
    made.save_state(RECS)
    assert cluster.emulator.objects("Secret")["fnserve-gateway"]["stringData"]["token"] == token


def test_in_the_cluster_new_versions_are_rendered_from_the_stored_spec(
    cluster: Cluster, platform: K8sPlatform
) -> None:
    gateway_side = K8sPlatform(cluster.api, watch=False)  # no project files: the stored spec
    with pytest.raises(PlatformError, match="recs was never deployed to this namespace"):
        gateway_side.save_state(RECS)
    platform.save_state(RECS)
    gateway_side.save_state(
        FunctionDeployment("recs", {**RECS.versions, "4": VersionDeployment("fnserve/recs:cd")})
    )
    assert cluster.api.get("Deployment", "fn-recs-v4") is not None


def test_a_refusal_is_one_line_naming_the_object_and_the_permission(cluster: Cluster) -> None:
    assert cluster.emulator is not None
    status = {"kind": "Status", "code": 403, "message": 'deployments.apps "fn-recs-v3" is forbidden: no'}
    cluster.api.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fn-recs-v3"}})
    route = cluster.emulator.emulator["patch /apis/apps/v1/namespaces/ns/deployments/fn-recs-v3/scale"]
    route << 403 << status  # the next scale is refused as RBAC would
    with pytest.raises(K8sError) as caught:
        cluster.api.set_scale("fn-recs-v3", 2)
    assert (caught.value.api_status, caught.value.status) == (403, 502)
    assert str(caught.value) == (
        'scale Deployment fn-recs-v3 to 2: deployments.apps "fn-recs-v3" is forbidden: no (HTTP 403)'
        " — your account lacks the permission in namespace 'ns'"
    )


def test_an_unreachable_api_is_one_line_naming_it() -> None:
    from kubernetes import client

    api = K8sApi(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")), "ns")
    with pytest.raises(
        K8sError, match=r"read ConfigMap fn-recs: cannot reach the Kubernetes API at http://127"
    ):
        api.get("ConfigMap", "fn-recs")
    api.close()


def test_connect_reads_the_kubeconfig_context_and_its_namespace(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.emulator is not None
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: emu, cluster: {{server: "{cluster.emulator.url}"}}}}]
users: [{{name: me, user: {{token: abc}}}}]
contexts:
- {{name: dev, context: {{cluster: emu, user: me, namespace: ns}}}}
- {{name: other, context: {{cluster: emu, user: me}}}}
current-context: dev
"""
    )
    environ = {"KUBECONFIG": str(kubeconfig)}
    api = K8sApi.connect(environ=environ)
    assert api.namespace == "ns"
    api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hello", "namespace": "ns"}})
    assert cluster.api.get("ConfigMap", "hello") is not None
    api.close()
    other = K8sApi.connect(context="other", environ=environ)
    assert other.namespace == "default"
    other.close()
    with pytest.raises(K8sError, match="has no context 'nope'"):
        K8sApi.connect(context="nope", environ=environ)
    with pytest.raises(K8sError, match="no Kubernetes cluster: set KUBECONFIG"):
        K8sApi.connect(environ={"HOME": str(tmp_path)})
    kubeconfig.write_text("clusters: [unclosed\n")
    with pytest.raises(K8sError, match="cannot use the Kubernetes configuration"):
        K8sApi.connect(environ=environ)


def test_a_spec_published_from_the_project_is_what_the_gateway_renders(cluster: Cluster) -> None:
    resources = {"cpu": Resources(cpu="2")}

    def project(name: str) -> FunctionSpec:
        return FunctionSpec(name, "ns", resources["cpu"])

    cli_side, gateway_side = K8sPlatform(cluster.api, specs=project), K8sPlatform(cluster.api, watch=False)
    cli_side.publish_spec("recs")  # fn deploy through a running gateway: the spec goes first
    assert gateway_side.load_state() == {}  # a spec alone is no deployment
    gateway_side.save_state(RECS)
    resources["cpu"] = Resources(cpu="3")
    cli_side.publish_spec("recs")
    assert gateway_side.load_state() == {"recs": RECS}  # the state is left alone
    gateway_side.save_state(RECS)
    deployment = cluster.api.get("Deployment", "fn-recs-v3")
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "3"
    cli_side.close()

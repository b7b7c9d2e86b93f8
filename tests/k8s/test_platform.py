"""The k8s platform's apply/scale/split/rollback logic, through the official client, against the
API emulator — and against a real cluster when ``KUBECONFIG`` points at one (``-m k8s`` runs only
those; without a cluster they are skipped, saying so)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fnserve.gateway import deployments
from fnserve.gateway.platform import FunctionDeployment, PlatformError, Scaling, VersionDeployment
from fnserve.k8s.gateway import GatewaySpec
from fnserve.k8s.platform import K8sPlatform
from fnserve.k8s.spec import FunctionSpec, Resources
from tests.support.k8s_emulator import Cluster, open_cluster

IMAGE = "registry.invalid/fnserve/recs:{}"  # never pulled successfully: these tests need no pod
ALL_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")


@pytest.fixture(params=["emulator", pytest.param("real", marks=pytest.mark.k8s)])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with open_cluster(request.param) as opened:
        yield opened


@pytest.fixture
def platform(cluster: Cluster) -> Iterator[K8sPlatform]:
    def spec(name: str) -> FunctionSpec:
        small = Resources(cpu="10m", memory="64Mi", cache="64Mi")
        return FunctionSpec(name, cluster.namespace, small, env={"FNSERVE_STORE": "s3://models/ckpt"})

    made = K8sPlatform(cluster.api, specs=spec, watch=False)
    yield made
    made.close()


def recs(*labels: str, min_replicas: int = 0) -> FunctionDeployment:
    weights = [100] + [0] * (len(labels) - 1)
    versions = {
        label: VersionDeployment(IMAGE.format(label), w) for label, w in zip(labels, weights, strict=True)
    }
    return FunctionDeployment("recs", versions, Scaling(min_replicas=min_replicas, max_replicas=5))


def exists(cluster: Cluster, kind: str, name: str) -> bool:
    for _ in range(50):  # a real API server deletes in the background
        found = cluster.api.get(kind, name)
        if found is None or not found["metadata"].get("deletionTimestamp"):
            return found is not None
        time.sleep(0.1)
    return True


def test_save_state_applies_every_object_and_load_state_reads_it_back(
    cluster: Cluster, platform: K8sPlatform
) -> None:
    platform.save_state(recs("1"))
    for kind in ALL_KINDS:
        assert cluster.api.get(kind, "fn-recs-v1") is not None, kind
    assert cluster.api.get("Service", "fn-recs") is not None
    assert cluster.api.get("HorizontalPodAutoscaler", "fn-recs-v1")["spec"]["minReplicas"] == 1  # type: ignore[index]
    assert platform.load_state() == {"recs": recs("1")}
    assert platform.desired("recs", "1") == 1  # a new Deployment starts one replica


def test_scale_to_zero_and_back_moves_the_hpa_floor_first(cluster: Cluster, platform: K8sPlatform) -> None:
    platform.save_state(recs("1"))
    platform.scale("recs", "1", 0)
    assert (cluster.api.get_scale("fn-recs-v1"), platform.desired("recs", "1")) == (0, 0)
    platform.scale("recs", "1", 3)
    hpa = cluster.api.get("HorizontalPodAutoscaler", "fn-recs-v1")
    assert hpa is not None and hpa["spec"]["minReplicas"] == 3
    assert (cluster.api.get_scale("fn-recs-v1"), platform.desired("recs", "1")) == (3, 3)
    platform.scale("recs", "1", 1)  # down: only the floor moves; the HPA scales down in its time
    assert cluster.api.get_scale("fn-recs-v1") == 3
    assert platform.desired("recs", "1") == 1


def test_reapplying_keeps_the_replicas_and_the_floor_the_gateway_set(
    cluster: Cluster, platform: K8sPlatform
) -> None:
    platform.save_state(recs("1"))
    platform.scale("recs", "1", 4)
    platform.save_state(deployments.scale(recs("1"), max_replicas=8))
    assert cluster.api.get_scale("fn-recs-v1") == 4
    hpa = cluster.api.get("HorizontalPodAutoscaler", "fn-recs-v1")
    assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 8)


def test_two_versions_serve_at_once_and_split_and_rollback_are_saved(
    cluster: Cluster, platform: K8sPlatform
) -> None:
    first = deployments.deploy(None, "recs", version="1", image=IMAGE.format(1))
    platform.save_state(first)
    canary = deployments.deploy(first, "recs", version="2", image=IMAGE.format(2), weight=10)
    platform.save_state(canary)
    assert exists(cluster, "Deployment", "fn-recs-v1") and exists(cluster, "Deployment", "fn-recs-v2")
    assert platform.load_state()["recs"].weights() == {"1": 90, "2": 10}
    platform.save_state(deployments.promote(canary, "2"))
    assert platform.load_state()["recs"].weights() == {"1": 0, "2": 100}
    platform.save_state(deployments.rollback(platform.load_state()["recs"]))
    assert platform.load_state()["recs"].weights() == {"1": 90, "2": 10}


def test_a_version_left_out_of_the_state_is_removed(cluster: Cluster, platform: K8sPlatform) -> None:
    platform.save_state(recs("1", "2"))
    platform.save_state(recs("2"))
    for kind in ALL_KINDS:
        assert not exists(cluster, kind, "fn-recs-v1"), kind
        assert exists(cluster, kind, "fn-recs-v2"), kind


def test_delete_removes_every_object_of_the_function(cluster: Cluster, platform: K8sPlatform) -> None:
    platform.save_state(recs("1"))
    platform.delete("recs")
    for kind in ALL_KINDS:
        assert not exists(cluster, kind, "fn-recs-v1"), kind
    assert not exists(cluster, "Service", "fn-recs")
    assert platform.load_state() == {}


def test_scaling_a_version_that_is_not_deployed_names_it(platform: K8sPlatform) -> None:
    platform.save_state(recs("1"))
    with pytest.raises(PlatformError, match=r"recs@9 is not deployed: there is no Deployment fn-recs-v9"):
        platform.scale("recs", "9", 1)
    platform.scale("recs", "9", 0)  # stopping what is gone (a removed version) is nothing to do


def test_an_object_name_of_another_function_is_not_taken_over(
    cluster: Cluster, platform: K8sPlatform
) -> None:
    platform.save_state(FunctionDeployment("recs", {"a-b": VersionDeployment(IMAGE.format(1))}))
    clash = FunctionDeployment("recs-a", {"b": VersionDeployment(IMAGE.format(2))})
    with pytest.raises(PlatformError, match="Deployment fn-recs-a-b already belongs to recs@a-b"):
        platform.save_state(clash)
    deployment = cluster.api.get("Deployment", "fn-recs-a-b")
    assert deployment is not None and deployment["metadata"]["labels"]["fnserve.dev/function"] == "recs"


def test_the_gateway_and_the_training_cronjob_are_accepted(cluster: Cluster) -> None:
    env = {"FNSERVE_STORE": "s3://models/ckpt"}
    spec = FunctionSpec(
        "recs", cluster.namespace, Resources(cpu="10m", memory="64Mi"), env, schedule="0 3 * * *"
    )
    gateway = GatewaySpec(
        cluster.namespace, image="registry.invalid/fnserve/gateway:1", cpu="10m", memory="64Mi"
    )
    made = K8sPlatform(cluster.api, specs=lambda _: spec, gateway=gateway, watch=False)
    made.save_state(recs("1"))
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "Secret"):
        assert exists(cluster, kind, "fnserve-gateway"), kind
    assert exists(cluster, "CronJob", "fnserve-train-recs")
    made.save_state(recs("1"))  # applying again changes nothing and keeps the token
    made.delete("recs")
    assert not exists(cluster, "CronJob", "fnserve-train-recs")
    assert exists(cluster, "Deployment", "fnserve-gateway")  # the gateway serves other functions


def test_a_rollout_adds_its_candidate_saves_its_stages_and_removes_it_when_rolled_back(
    cluster: Cluster, platform: K8sPlatform
) -> None:
    from fnserve.gateway.rollout import RolloutPolicy

    policy = RolloutPolicy.from_table(
        {"stages": [{"shadow": True, "requests": 20}, {"weight": 10, "requests": 20}, {"weight": 100}]},
        where="[rollout]",
    )
    stable = deployments.deploy(None, "recs", version="1", image=IMAGE.format(1), checkpoint_version="3")
    stable = deployments.deploy(stable, "recs", policy=policy.to_dict())
    platform.save_state(stable)
    added = deployments.deploy(
        stable, "recs", version="ckpt4", image=IMAGE.format(1), checkpoint_version="4", weight=0
    )
    started = deployments.start_rollout(
        added, "ckpt4", 1000.0, checkpoint=4, why="checkpoint 4 was published"
    )
    platform.save_state(started)
    assert exists(cluster, "Deployment", "fn-recs-ckpt4")  # the candidate runs beside stable
    canary = deployments.advance_rollout(started, 1010.0, "gates kept")
    platform.save_state(canary)
    saved = platform.load_state()["recs"]  # the stage, the policy and the decision log survive a restart
    assert saved == canary and saved.weights() == {"1": 90, "ckpt4": 10}
    assert saved.rollout is not None and saved.rollout.stage == 1
    platform.save_state(deployments.fail_rollout(saved, 1020.0, "error_rate 0.3 (≤ 0.01) over 20 answers"))
    assert not exists(cluster, "Deployment", "fn-recs-ckpt4")
    after = platform.load_state()["recs"]
    assert after.weights() == {"1": 100} and after.rejected == (4,)
    assert [e["kind"] for e in after.events] == ["started", "advanced", "rolled back"]

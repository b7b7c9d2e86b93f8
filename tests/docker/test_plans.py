"""The docker target's plans, by value, without an engine: how a version is scaled and rolled, what
a draining container is sent and when, the replica and gateway containers, and the settings.
(The same code against real containers: tests/docker/test_deploy.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from fnserve.docker.containers import StoreAccess
from fnserve.docker.gateway import engine_socket, gateway_spec, plan_gateway_image
from fnserve.docker.replicas import (
    SPEC_LABEL,
    DockerSettings,
    Member,
    Plan,
    plan_version,
    replica_access,
    replica_spec,
    spec_digest,
)
from fnserve.docker.tracker import Tracker
from fnserve.gateway.platform import PlatformError, VersionDeployment
from fnserve.gateway.targets import platform_for
from fnserve.images import BuildError
from fnserve.images.inputs import BuildInputs
from fnserve.images.templates import available_templates, load_template
from fnserve.project import ProjectSettings


def m(id_: str, current: bool = True, ready: bool = True, created: int = 0) -> Member:
    return Member(id_, current, ready, created)


@pytest.mark.parametrize(
    ("members", "want", "plan"),
    [
        ([], 2, Plan(2, ())),  # from zero
        ([m("a"), m("b")], 2, Plan(0, ())),  # steady
        (
            [m("a", created=1), m("b", created=2), m("c", ready=False)],
            1,
            Plan(0, ("c", "b")),
        ),  # unready first
        ([m("a"), m("b")], 0, Plan(0, ("a", "b"))),  # to zero
        ([m("a", current=False), m("b", current=False)], 2, Plan(2, ())),  # a rollout begins: surge
        ([m("a", False), m("b", False), m("c", ready=False), m("d")], 2, Plan(0, ("b",))),  # one new ready
        ([m("a", False), m("b", False, ready=False), m("c"), m("d")], 2, Plan(0, ("a", "b"))),  # done
        ([m("a", False, ready=False), m("b", False)], 1, Plan(1, ("a",))),  # a broken old one goes first
    ],
)
def test_a_version_is_scaled_and_rolled_without_dropping_below_its_ready_count(
    members: list[Member], want: int, plan: Plan
) -> None:
    assert plan_version(members, want) == plan


def test_a_draining_container_gets_sigterm_after_the_pause_and_sigkill_past_the_drain() -> None:
    tracker = Tracker(stop_delay_s=1.0, kill_after_s=13.0)
    assert tracker.signal("c", now=5) is None  # not draining
    tracker.drain("c", now=10)
    tracker.drain("c", now=11)  # chosen again: the first time counts
    assert [tracker.signal("c", now=t) for t in (10.5, 11.0, 11.5, 24.0, 24.1)] == [
        None,
        "SIGTERM",
        None,
        None,
        "SIGKILL",
    ]


def test_crashes_before_ready_back_off_and_a_crash_after_ready_restarts_at_once() -> None:
    tracker, key = Tracker(stop_delay_s=1, kill_after_s=10), ("recs", "1")
    pauses = []
    for n in range(4):
        for older in tracker.crashed(key, f"never-ready-{n}", now=100):  # the platform removes these
            tracker.forget(older)
        pauses.append(tracker.failures[key][1] - 100)
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    assert tracker.crashed(key, "never-ready-3", now=200) == []  # counted once
    tracker.probed("served", True)
    assert tracker.crashed(key, "served", now=300) == ["never-ready-3"] and tracker.may_start(key, now=300)
    tracker.start_failed(key, "no such image", now=300)
    assert tracker.errors[key] == "no such image" and not tracker.may_start(key, now=300)
    tracker.forget_function("recs")
    assert tracker.may_start(key, now=0) and not tracker.errors


def test_a_replica_is_the_runtime_on_the_private_network_with_no_published_port(tmp_path: Path) -> None:
    version = VersionDeployment("fnserve/recs:ab12cd34ef56", 90, "latest")
    access = StoreAccess(
        {"FNSERVE_STORE": "file:///fnserve/store"}, {"/data/store": ("/fnserve/store", "ro")}
    )
    spec = replica_spec(
        "recs", "3", version, access, name="fnserve-recs-3-a1", network="ml", project="p1", drain_timeout_s=20
    )
    assert (spec.image, spec.network, spec.ports, spec.read_only) == (version.image, "ml", {}, True)
    assert spec.mounts == {"/data/store": ("/fnserve/store", "ro")} and "/tmp" in spec.tmpfs
    assert (
        spec.environment["FNSERVE_DRAIN_TIMEOUT_S"] == "20"
        and "FNSERVE_CHECKPOINT_VERSION" not in spec.environment
    )
    assert spec.labels == {
        "io.fnserve.role": "replica",
        "io.fnserve.project": "p1",
        "io.fnserve.function": "recs",
        "io.fnserve.version": "3",
        SPEC_LABEL: spec_digest(version),
    }
    assert spec_digest(version) == spec_digest(
        VersionDeployment(version.image, 10, "latest")
    )  # weight: no roll
    assert spec_digest(version) != spec_digest(VersionDeployment(version.image, 90, "7"))


def test_replicas_reach_the_store_or_the_deploy_says_why_not(tmp_path: Path) -> None:
    def access(store: str, **options: object) -> StoreAccess:
        settings = ProjectSettings.from_mapping(
            tmp_path, {"store": {"options": options}}, {}, {"store": store}
        )
        return replica_access(settings, {}, "fnserve", {})

    with pytest.raises(PlatformError, match="does not exist: train the function first") as missing:
        access((tmp_path / "store").as_uri())
    assert missing.value.status == 422
    with pytest.raises(PlatformError, match="memory: a container cannot reach it"):
        access("memory://models")
    with pytest.raises(PlatformError, match="loopback, which containers on the fnserve network cannot reach"):
        access("s3://bucket/store", client_kwargs={"endpoint_url": "http://127.0.0.1:9000"})
    baked = ProjectSettings.from_mapping(tmp_path, {}, {}, {"store": "memory://models"})
    assert replica_access(baked, {"io.fnserve.checkpoint-baked": "sha256:ab"}, "fnserve", {}) == StoreAccess()
    (tmp_path / "store").mkdir()
    assert access((tmp_path / "store").as_uri()).mounts == {str(tmp_path / "store"): ("/fnserve/store", "ro")}


def test_the_gateway_container_gets_the_socket_the_project_and_its_settings(tmp_path: Path) -> None:
    settings = ProjectSettings.from_mapping(tmp_path, {}, {}, {"store": "/srv/models", "gateway_port": 9000})
    environ = {
        "FNSERVE_GATEWAY_PORT": "9000",
        "FNSERVE_GATEWAY_TOKEN": "t",
        "AWS_REGION": "x",
        "HOME": "/root",
    }
    container = {"socket": "/run/docker.sock", "socket_gid": 998, "user": "1000:1000", "environ": environ}
    spec = gateway_spec(settings, DockerSettings(), "sha256:feed", **container)
    project = str(tmp_path)
    assert spec.mounts == {
        "/run/docker.sock": ("/var/run/docker.sock", "rw"),
        project: (project, "rw"),  # at its own path: host paths mean the same inside
        "/srv/models": ("/srv/models", "ro"),  # a store outside the project
    }
    assert (spec.working_dir, spec.user, spec.group_add, spec.restart) == (
        project,
        "1000:1000",
        ("998",),
        "unless-stopped",
    )
    assert spec.ports == {8080: ("127.0.0.1", 9000)} and spec.network == "fnserve" and spec.read_only
    assert spec.environment == {
        "FNSERVE_GATEWAY_HOST": "0.0.0.0",
        "FNSERVE_GATEWAY_PORT": "8080",
        "FNSERVE_GATEWAY_TARGET": "docker",
        "FNSERVE_GATEWAY_TOKEN": "t",
        "FNSERVE_DOCKER_NETWORK": "fnserve",
        "FNSERVE_DOCKER_GATEWAY_NAME": "fnserve-gateway",
        "AWS_REGION": "x",
    }
    again = gateway_spec(settings, DockerSettings(), "sha256:feed", **container)
    other = gateway_spec(settings, DockerSettings(), "sha256:beef", **container)
    assert again.labels[SPEC_LABEL] == spec.labels[SPEC_LABEL] != other.labels[SPEC_LABEL]


def test_the_gateway_image_is_planned_from_its_own_template(tmp_path: Path) -> None:
    inputs = BuildInputs(
        ("starlette==1.0",), "[global]\n", b"CA", Path(__file__).resolve().parents[2] / "fnserve"
    )
    plan = plan_gateway_image(inputs, ("docker==7.2.0",), base_image="fnserve/base:bookworm")
    files = {f.path: f for f in plan.files}
    assert plan.image.startswith("fnserve/gateway:") and plan.latest == "fnserve/gateway:latest"
    assert plan.dockerfile.startswith("#") and "FROM fnserve/base:bookworm AS deps" in plan.dockerfile
    assert 'ENTRYPOINT ["python", "-m", "fnserve.cli", "gateway"]' in plan.dockerfile
    assert files["build/gateway-requirements.txt"].content() == b"docker==7.2.0\n"
    assert "fnserve/docker/gateway.py" in files and not any(p.startswith("function/") for p in files)
    assert plan_gateway_image(inputs, ("docker==7.2.0",), base_image="fnserve/base:bookworm").tag == plan.tag
    assert "gateway" not in available_templates()
    with pytest.raises(BuildError, match="'gateway' is not a function template"):
        load_template("gateway")


def test_docker_settings_come_from_the_environment_then_fn_toml(tmp_path: Path) -> None:
    (tmp_path / "fn.toml").write_text('[docker]\nnetwork = "ml"\ngateway_name = "gw"\n')
    assert DockerSettings.load(tmp_path, {}) == DockerSettings("ml", "gw", "")
    assert DockerSettings.load(tmp_path, {"FNSERVE_DOCKER_NETWORK": "other"}).network == "other"
    with pytest.raises(ValueError, match="setting docker network 'a b'"):
        DockerSettings.load(tmp_path, {"FNSERVE_DOCKER_NETWORK": "a b"})
    assert engine_socket({}) == "/var/run/docker.sock"
    with pytest.raises(BuildError, match="run the gateway yourself instead"):
        engine_socket({"DOCKER_HOST": "tcp://10.0.0.5:2375"})


def test_without_an_engine_the_target_says_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(PlatformError, match=r"not reachable.*scripts/ensure-docker"):
        platform_for("docker", ProjectSettings.from_mapping(tmp_path, {}, {}, {}))

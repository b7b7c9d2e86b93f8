"""The docker target for real: replica containers on a private network behind the gateway, under load.

Most tests use the tiny `weighted` function (tests/support/fns, the `python` template: its answer is x times
the weight in its checkpoint, so an answer says which version gave it), built twice: v1, and v2 whose
code adds 1000. Every test's containers are removed on the way out, whatever happened; the module's
network too. The last test is the user's path with the real `recs` image: `fn build recs`,
`fn deploy recs --target docker` (the gateway in its container on 127.0.0.1), then a prediction.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from fnserve.cli.main import cli
from fnserve.docker.platform import DockerPlatform
from fnserve.docker.replicas import PROJECT_LABEL, ROLE_LABEL, DockerSettings, project_id, spec_digest
from fnserve.docker_engine import DockerEngine
from fnserve.gateway.control import connect
from fnserve.gateway.platform import PlatformError, VersionDeployment
from fnserve.images.builds import build_image, prepare_build
from fnserve.project import load_settings
from fnserve.runtime.store import CheckpointStore
from tests.support.dockertarget import (
    Load,
    deployment,
    docker_gateway,
    percentile,
    private_network,
    project_settings,
    value,
)
from tests.support.gateways import until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RECS_QUERY = "user_country=NL&user_language=nl&day_of_week=5&season=winter&hotel_price=129.0&hotel_id=4711"
V1, V2 = 3.0, 1003.0  # x=3 with checkpoint 1 (weight 1), from the v1 and the v2 image
CKPT2 = 30.0  # x=3 with checkpoint 2 (weight 10), v1 image


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """functions/weighted (python template) and a store with checkpoint 1 (weight 1) and 2 (weight 10)."""
    project = tmp_path_factory.mktemp("docker-target")
    folder = project / "functions" / "weighted"
    folder.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "support" / "fns" / "weighted" / "predict.py", folder / "predict.py")
    (folder / "function.toml").write_text('[build]\ntemplate = "python"\n')
    store = CheckpointStore((project / "store").as_uri(), cache_dir=project / "publish-cache")
    for weight in ("1", "10"):
        (project / f"w{weight}").mkdir()
        (project / f"w{weight}" / "weight.txt").write_text(weight)
        store.publish("weighted", project / f"w{weight}")
    return project


@pytest.fixture(scope="module")
def images(project: Path, docker_engine: DockerEngine) -> dict[str, str]:
    """The v1 and v2 images of `weighted` (v2 answers 1000 more): ``{"v1": ref, "v2": ref}``."""
    settings, predict = project_settings(project), project / "functions" / "weighted" / "predict.py"
    v1 = predict.read_text()
    v2 = v1.replace("return x * model", "return x * model + 1000")
    assert v2 != v1
    built = {}
    for label, code in (("v1", v1), ("v2", v2)):
        predict.write_text(code)
        started = time.perf_counter()
        built[label] = build_image(
            prepare_build(settings, "weighted", docker_engine), docker_engine
        ).plan.image
        print(f"image {label}: {built[label]} in {time.perf_counter() - started:.1f} s")
    return built


@pytest.fixture(scope="module")
def network(docker_engine: DockerEngine, project: Path) -> Iterator[str]:
    """A private network of this module's own; removed (with any container left on it) at the end."""
    with private_network(docker_engine, project) as name:
        yield name


def test_two_replicas_one_killed_under_load_fails_no_request(
    project: Path, images: dict[str, str], network: str, docker_engine: DockerEngine
) -> None:
    d = deployment(images["v1"], ("1", 100, "1"), min_replicas=2, max_replicas=2)
    with docker_gateway(project, network, [d]) as gw:
        gw.wait_ready("1", 2)
        victim = gw.containers()[0]
        with Load(gw.url, x=3) as load:
            time.sleep(1.5)
            docker_engine.kill(victim.id)
            time.sleep(3.0)
        print(f"kill test: {load.count} requests, failed: {sum(load.failed().values())}")
        assert not load.failed(), load.failed().most_common(3)
        assert load.count > 100 and set(load.values()) == {V1}
        gw.wait_ready("1", 2)  # replaced
        assert victim.id not in {c.id for c in gw.containers()}
        assert any("(exited 137)" in line for line in gw.platform.logs("weighted")), "the crash is kept"


def test_rolling_update_from_v1_to_v2_fails_no_request(
    project: Path, images: dict[str, str], network: str
) -> None:
    d = deployment(images["v1"], ("1", 100, "1"), min_replicas=2, max_replicas=2)
    with docker_gateway(project, network, [d]) as gw:
        gw.wait_ready("1", 2)
        old = {c.id for c in gw.containers()}
        with Load(gw.url, x=3) as load:
            time.sleep(1.0)
            started = time.perf_counter()
            gw.admin("PUT", "/functions/weighted", {"image": images["v2"]})
            v2 = spec_digest(VersionDeployment(images["v2"], 100, "1"))
            until(
                lambda: (
                    {c.labels.get("io.fnserve.spec") for c in gw.containers()} == {v2}
                    and gw.versions()["1"]["ready"] == 2
                ),
                "every replica on v2",
                90,
            )
            rolled_s = time.perf_counter() - started
            time.sleep(1.0)
        print(
            f"rolling update: {rolled_s:.1f} s, {load.count} requests, failed {sum(load.failed().values())}"
        )
        assert not load.failed(), load.failed().most_common(3)
        assert set(load.values()) == {V1, V2} and load.values()[V2] > 10
        assert not old & {c.id for c in gw.containers()}
        assert value(httpx.get(f"{gw.url}/function/weighted?x=3").content) == V2


def test_scale_to_zero_after_idle_then_bursts_of_50_all_succeed(
    project: Path, images: dict[str, str], network: str
) -> None:
    d = deployment(images["v1"], ("1", 100, "1"), min_replicas=0, max_replicas=2, scale_to_zero_after_s=1)
    cold_s, slowest_s = [], []
    with docker_gateway(project, network, [d]) as gw:
        for _ in range(5):
            until(lambda: not gw.containers() and gw.versions()["1"]["desired"] == 0, "scale to zero", 30)
            with Load(gw.url, workers=50, total=50, x=3) as burst:
                burst.wait()
            assert burst.answers == {(200, b'{"predictions":[3.0]}'): 50}, burst.answers
            cold_s.append(gw.admin("GET", "/functions/weighted")["last_cold_start"]["total_s"])
            slowest_s.append(max(burst.latencies_s))
    print(
        f"cold start from zero (gateway, {len(cold_s)} times): p50 {percentile(cold_s, 0.5):.2f} s, "
        f"max {max(cold_s):.2f} s; slowest of each burst of 50: {', '.join(f'{s:.2f}' for s in slowest_s)} s"
    )
    assert max(slowest_s) < 30


def test_a_90_10_split_is_measured_within_5_points_over_2000_requests(
    project: Path, images: dict[str, str], network: str
) -> None:
    d = deployment(images["v1"], ("a", 90, "1"), ("b", 10, "2"), min_replicas=1)
    with docker_gateway(project, network, [d]) as gw:
        gw.wait_ready("a", 1)
        gw.wait_ready("b", 1)
        with Load(gw.url, total=2000, x=3) as load:
            load.wait()
    share = load.values()[CKPT2] / 2000
    print(f"90/10 split over 2000 requests: b answered {share:.1%}")
    assert load.count == 2000 and not load.failed()
    assert abs(share - 0.10) <= 0.05, load.values()


def test_a_rollback_takes_effect_for_the_next_request(
    project: Path, images: dict[str, str], network: str
) -> None:
    d = deployment(images["v1"], ("a", 100, "1"), ("b", 0, "2"), min_replicas=1)
    with docker_gateway(project, network, [d]) as gw, httpx.Client(base_url=gw.url, timeout=60) as client:
        gw.wait_ready("a", 1)

        def next_answer() -> float:
            return value(client.get("/function/weighted?x=3").content)

        assert next_answer() == V1
        gw.admin("POST", "/functions/weighted/promote", {"version": "b"})
        assert next_answer() == CKPT2  # b had no replica: this request waited for one
        gw.admin("POST", "/functions/weighted/rollback")
        assert [next_answer() for _ in range(20)] == [V1] * 20


def test_a_wake_up_claims_a_warm_pool_standby_container(
    project: Path, images: dict[str, str], network: str
) -> None:
    d = deployment(images["v1"], ("1", 100, "1"), min_replicas=0, max_replicas=1, scale_to_zero_after_s=1)
    with docker_gateway(project, network, [d]) as gw:
        until(lambda: gw.versions()["1"]["standby"] == 1, "a prepared standby container", 90)
        pool = [c for c in gw.platform._containers("weighted") if gw.platform._in_pool(c)]
        assert len(pool) == 1 and pool[0].labels["io.fnserve.standby"] == "true" and not gw.containers()
        answer = httpx.get(f"{gw.url}/function/weighted?x=3", timeout=60)
        assert value(answer.content) == V1
        assert [c.id for c in gw.containers()] == [pool[0].id]  # the standby became the replica
        cold = until(lambda: gw.admin("GET", "/functions/weighted")["last_cold_start"], "the record", 40)
        assert cold["standby"] is True and cold["import_s"] == 0.0
        # a restarted gateway's platform tells the claimed container from a standby by asking it
        fresh = DockerPlatform(project_settings(project), DockerEngine.connect(), DockerSettings(network))
        try:
            assert [r.id for r in fresh.replicas("weighted")] == [pool[0].id]
        finally:
            fresh.close()
        until(lambda: gw.versions()["1"]["standby"] >= 1, "the pool refilled", 90)


def test_fn_build_and_fn_deploy_recs_to_docker_then_predict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_engine: DockerEngine
) -> None:
    """The user's path, with the gateway in its container; the recs model trained into a store first."""
    shutil.copytree(REPO / "functions" / "recs", tmp_path / "functions" / "recs")
    (tmp_path / "fn.toml").write_text('[store]\nroot = "store"\n')
    env = {**os.environ, "FNSERVE_STORE": (tmp_path / "store").as_uri(), "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "functions/recs/train.py", "--rows", "20000"], cwd=tmp_path, env=env, check=True
    )
    port, suffix = free_port(), secrets.token_hex(4)
    names = {
        "FNSERVE_DOCKER_NETWORK": f"fnserve-e2e-{suffix}",
        "FNSERVE_DOCKER_GATEWAY_NAME": f"fnserve-gw-{suffix}",
    }
    for key, value_ in {**names, "FNSERVE_GATEWAY_PORT": str(port), "COLUMNS": "200"}.items():
        monkeypatch.setenv(key, value_)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    try:
        built = runner.invoke(cli, ["build", "recs"], catch_exceptions=False)
        assert built.exit_code == 0, built.output
        started = time.perf_counter()
        deployed = runner.invoke(cli, ["deploy", "recs", "--target", "docker"], catch_exceptions=False)
        assert deployed.exit_code == 0, deployed.output
        answer = httpx.get(f"http://127.0.0.1:{port}/function/recs?{RECS_QUERY}", timeout=120)
        took = time.perf_counter() - started
        print(f"fn deploy recs --target docker, then its first prediction: {took:.1f} s")
        assert answer.status_code == 200, answer.text
        assert 0 < answer.json()["predictions"][0] < 1
        status = runner.invoke(cli, ["status", "recs"], catch_exceptions=False)
        assert "1/1" in status.output and "100%" in status.output, status.output
        logs = runner.invoke(cli, ["logs", "recs", "--tail", "20"], catch_exceptions=False)
        assert "ready" in logs.output, logs.output
        scale = ["scale", "recs", "--min", "0", "--scale-to-zero-after", "1"]
        assert runner.invoke(cli, scale, catch_exceptions=False).exit_code == 0
        cold = []
        for _ in range(3):
            until(lambda: not serving(tmp_path), "recs scaled to zero", 60)
            until(lambda: serving(tmp_path, "standby"), "a prepared warm-pool standby", 120)
            answer = httpx.get(f"http://127.0.0.1:{port}/function/recs?{RECS_QUERY}", timeout=120)
            assert answer.status_code == 200, answer.text
            cold.append(
                connect(load_settings(tmp_path, os.environ)).status()["functions"][0]["last_cold_start"]
            )
        totals = [c["total_s"] for c in cold]
        assert all(c["standby"] and c["import_s"] == 0 for c in cold), cold  # each claimed a standby
        print(
            f"recs cold start from zero: p50 {percentile(totals, 0.5):.2f} s, max {max(totals):.2f} s; {cold}"
        )
        deleted = runner.invoke(cli, ["delete", "recs", "--yes"], catch_exceptions=False)
        assert deleted.exit_code == 0 and not replicas(docker_engine, tmp_path), deleted.output
    finally:
        for container in docker_engine.list_containers({PROJECT_LABEL: project_id(tmp_path)}):
            docker_engine.remove(container.id)
        docker_engine.remove_network(names["FNSERVE_DOCKER_NETWORK"])


def test_mistakes_say_what_to_do(project: Path, network: str, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = DockerPlatform(project_settings(project), DockerEngine.connect(), DockerSettings(network))
    try:
        with pytest.raises(
            PlatformError, match=r"fnserve/nosuch:0 is not in the local Docker engine: `fn build"
        ):
            platform.save_state(deployment("fnserve/nosuch:0", ("1", 100, "latest")))
    finally:
        platform.close()
    monkeypatch.chdir(project)
    missing = CliRunner().invoke(
        cli, ["deploy", "weighted", "--target", "docker", "--image", "fnserve/nosuch:0"]
    )
    assert missing.exit_code == 1 and "fnserve/nosuch:0 is not in the local Docker engine" in missing.output
    unknown = CliRunner().invoke(cli, ["deploy", "nosuch", "--target", "docker"])
    assert unknown.exit_code == 1 and "no function 'nosuch'" in unknown.output, unknown.output


def serving(project: Path, what: str = "replicas") -> Any:
    """The gateway's replicas (or prepared standbys) of the project's one function's version."""
    return connect(load_settings(project, os.environ)).status()["functions"][0]["versions"][0][what]


def replicas(engine: DockerEngine, project: Path) -> list[Any]:
    return engine.list_containers({ROLE_LABEL: "replica", PROJECT_LABEL: project_id(project)})


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

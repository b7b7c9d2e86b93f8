"""Rollouts on the docker target, with a prober running throughout (issue 13's three cases).

The `weighted` function (python template) answers x times its checkpoint's weight, so each answer
says which checkpoint gave it: checkpoint 1 (weight 1) is stable; the gateway's scheduled
retraining (in a container of the image) publishes a good checkpoint (weight 1.01), which is
shadowed, canaried and promoted, then a bad one (weight 50, from changed data), rolled back at the
shadow stage without any caller seeing its answers; a version whose image fails every request is
rolled back at the canary stage, with at most about the canary's share of requests affected.
"""

from __future__ import annotations

import calendar
import dataclasses
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fnserve.docker_engine import DockerEngine
from fnserve.gateway.rollout import RolloutPolicy
from fnserve.images.builds import build_image, prepare_build
from fnserve.runtime.store import CheckpointStore
from tests.local.test_scheduled_training import fast_clock
from tests.support.dockertarget import deployment, docker_gateway, private_network, project_settings
from tests.support.gateways import until
from tests.support.probe import prober
from tests.support.training import WEIGHT_FROM_DATA

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GATES = {"mean_abs_diff": 0.5, "p99_latency_ratio": 50.0, "output_psi": False}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sources of `weighted` (retrained on a schedule from data/weight.txt: at 12:01, 12:11, ...)
    and of a faulty `weighted`; checkpoint 1 (weight 1) published."""
    project = tmp_path_factory.mktemp("docker-rollouts")
    (project / "data").mkdir()
    (project / "data" / "weight.txt").write_text("1.01\n")
    data = (project / "data" / "weight.txt").as_uri()
    for name, source in (("weighted", "weighted"), ("faulty", "weighted_faulty")):
        folder = project / "sources" / name
        folder.mkdir(parents=True)
        shutil.copy(REPO / "tests" / "support" / "fns" / source / "predict.py", folder / "predict.py")
        (folder / "train.py").write_text(WEIGHT_FROM_DATA)
        (folder / "function.toml").write_text(
            f'[build]\ntemplate = "python"\n[train]\nschedule = "1-59/10 * * * *"\ndata = "{data}"\n'
        )
    publish(project, "1")
    return project


def publish(project: Path, weight: str) -> int:
    store = CheckpointStore((project / "store").as_uri(), cache_dir=project / "publish-cache")
    folder = project / f"w-{secrets.token_hex(4)}"
    folder.mkdir()
    (folder / "weight.txt").write_text(weight)
    return store.publish("weighted", folder)


@pytest.fixture(scope="module")
def images(project: Path, docker_engine: DockerEngine) -> dict[str, str]:
    """``{"good": ref, "faulty": ref}``: both are the function `weighted`, the second fails requests."""
    settings, built = project_settings(project), {}
    target = project / "functions" / "weighted"
    for label, source in (("faulty", "faulty"), ("good", "weighted")):  # the good sources stay
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(project / "sources" / source, target)
        built[label] = build_image(
            prepare_build(settings, "weighted", docker_engine), docker_engine
        ).plan.image
    return built


@pytest.fixture(scope="module")
def network(docker_engine: DockerEngine, project: Path) -> Iterator[str]:
    with private_network(docker_engine, project) as name:
        yield name


def with_policy(d: Any, **table: Any) -> Any:
    return dataclasses.replace(d, policy=RolloutPolicy.from_table(table, where="[rollout]"))


def ended(gw: Any) -> dict[str, Any] | None:
    status = gw.admin("GET", "/functions/weighted")
    rollout = status.get("rollout")
    return status if rollout and rollout["status"] != "active" else None


def at(status: dict[str, Any], kind: str) -> float:
    return next(e["at"] for e in status["events"] if e["kind"] == kind)


def test_a_scheduled_retraining_is_shadowed_canaried_and_promoted_then_a_bad_one_rolled_back(
    project: Path, images: dict[str, str], network: str
) -> None:
    """The gateway retrains in a container of the image on ``[train] schedule`` (a clock 30 times
    too fast: every 20 s) and rolls out what the training published."""
    stages = [{"shadow": True, "requests": 60}, {"weight": 50, "requests": 60}, {"weight": 100}]
    d = with_policy(
        deployment(images["good"], ("1", 100, "1")), stages=stages, gates=GATES, shadow_fraction=0.5
    )
    data = project / "data" / "weight.txt"
    with docker_gateway(project, network, [d], rollouts=True, clock=fast_clock(speed=30.0)) as gw:
        gw.wait_ready("1", 1)
        with prober(gw.url) as answers:
            promoted = until(
                lambda: (s := ended(gw)) and s["rollout"]["status"] == "promoted" and s,
                "a retrained checkpoint promoted",
                180,
            )
            label = promoted["rollout"]["candidate"]
            until(
                lambda: sum(a.version == label for a in answers[-20:]) == 20, "only the promoted version", 60
            )
            data.write_text("50\n")  # the next retraining learns something else entirely
            final = until(
                lambda: (s := ended(gw)) and s["rollout"]["status"] == "rolled back" and s,
                "the bad retraining's rollout",
                180,
            )
    print(f"docker rollouts: {len(answers)} answers; {[e['message'] for e in final['events']]}")
    runs = [r for r in final["training"]["runs"] if r["outcome"] == "ok"]
    assert len(runs) >= 2  # the schedule published both checkpoints
    assert len(answers) >= 400 and all(a.status == 200 for a in answers)  # prober success 1.0
    canary = at(promoted, "advanced")
    newer = [a for a in answers if a.value == pytest.approx(1.01)]
    assert newer and min(a.at for a in newer) >= canary - 0.05  # only once the canary weight said so
    assert not any(a.value == pytest.approx(50.0) for a in answers)  # the bad one answered nobody
    assert final["rollout"]["stage"] == 0  # caught at the shadow stage
    assert final["rollout"]["reason"].startswith("mean_abs_diff 48.99 (≤ 0.5)"), final["rollout"]["reason"]


def test_a_failing_image_is_rolled_back_at_the_canary_stage(
    project: Path, images: dict[str, str], network: str
) -> None:
    stages = [{"weight": 20, "requests": 200}, {"weight": 100}]
    d = with_policy(
        deployment(images["good"], ("1", 100, "1")),
        stages=stages,
        gates={"p99_latency_ratio": False},
        min_requests=10,
    )
    never_due = lambda: calendar.timegm((2025, 6, 1, 12, 2, 0)) * 1.0  # noqa: E731 - no retraining here
    with docker_gateway(project, network, [d], clock=never_due) as gw:
        gw.wait_ready("1", 1)
        with prober(gw.url) as answers:
            until(lambda: len(answers) > 20, "the prober's first answers", 30)
            started = gw.admin("PUT", "/functions/weighted", {"version": "2", "image": images["faulty"]})
            assert started["rollout"]["candidate"] == "2"
            done = until(lambda: ended(gw), "the failing image's rollout", 180)
            back = at(done, "rolled back")
            until(lambda: sum(a.at > back + 0.5 for a in answers) > 50, "answers after the rollback", 30)
    assert done["rollout"]["status"] == "rolled back"
    assert done["rollout"]["reason"].startswith("error_rate 1 (≤ 0.01) over "), done["rollout"]["reason"]
    failed = [a for a in answers if a.status != 200]
    assert failed and all(a.version == "2" for a in failed)
    during = [a for a in answers if at(done, "started") <= a.at <= back]
    assert len(failed) <= 0.4 * len(during)
    assert all(a.status == 200 for a in answers if a.at > back + 0.5)

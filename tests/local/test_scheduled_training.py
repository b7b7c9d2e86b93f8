"""``[train] schedule`` on the local target, for real: the gateway runs each function's train.py as
a process at the due times of a clock running 60 times too fast (a minute a second), with the data
URL of ``[train] data``, into a ``file://`` store; runs show in /admin/status, /metrics, the
dashboard's data, `fn status`'s lines and `fn logs`, and a restarted gateway still shows them.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fnserve.cli import retraining
from fnserve.gateway.platform import FunctionDeployment, Scaling, VersionDeployment
from fnserve.runtime.store import CheckpointStore
from tests.support.gateways import FNS, running_gateway, until
from tests.support.training import WEIGHT_FROM_DATA

pytestmark = pytest.mark.slow

WEIGHTED_TRAIN = """\
import time

import fsspec
import pathlib
import tempfile
from fnserve import TrainContext

ctx = TrainContext.from_env()
print("training on", ctx.data, flush=True)
time.sleep(2.5)  # long enough for the next two due times (a second each) to find it going
with fsspec.open(ctx.data, "r") as f:
    weight = f.read().strip()
out = pathlib.Path(tempfile.mkdtemp())
(out / "weight.txt").write_text(weight)
ctx.publish(out, metrics={"weight": float(weight)})
"""
FAULTY_TRAIN = """\
import pathlib
import tempfile
from fnserve import TrainContext

ctx = TrainContext.from_env()
print("connecting to postgresql://trainer:hunter2-secret@db.internal/shop", flush=True)
out = pathlib.Path(tempfile.mkdtemp())
(out / "weight.txt").write_text("9")
ctx.publish(out)  # published, then the script fails: the version must not stay
raise SystemExit("the evaluation after publishing failed")
"""


def fast_clock(speed: float = 60.0) -> Callable[[], float]:
    """Unix time running ``speed`` times too fast, from one second before 12:01 UTC."""
    base, started = calendar.timegm((2025, 6, 1, 12, 0, 59)) * 1.0, time.monotonic()
    return lambda: base + (time.monotonic() - started) * speed


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """functions/weighted (trains from the data file: weight 3) and functions/faulty, both on a
    schedule of every minute; the data file in data/."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "weight.txt").write_text("3\n")
    data = (tmp_path / "data" / "weight.txt").as_uri()
    for name, train in (("weighted", WEIGHTED_TRAIN), ("faulty", FAULTY_TRAIN)):
        folder = tmp_path / "functions" / name
        folder.mkdir(parents=True)
        predict = (FNS / "weighted" / "predict.py").read_text().replace("def weighted", f"def {name}")
        (folder / "predict.py").write_text(predict)
        (folder / "train.py").write_text(train)
        (folder / "function.toml").write_text(f'[train]\nschedule = "* * * * *"\ndata = "{data}"\n')
    return tmp_path


def deployed(project: Path, name: str) -> FunctionDeployment:
    folder = str(project / "functions" / name)
    return FunctionDeployment(name, {"1": VersionDeployment(folder)}, scaling=Scaling(min_replicas=0))


def training(gw: Any, name: str) -> dict[str, Any]:
    return dict(gw.status(name)["training"])


def test_scheduled_runs_train_publish_and_show_everywhere(project: Path) -> None:
    functions = [deployed(project, "weighted"), deployed(project, "faulty")]
    with running_gateway(project, functions, clock=fast_clock()) as gw:
        ran = lambda name, outcome: [r for r in training(gw, name)["runs"] if r["outcome"] == outcome]  # noqa: E731
        until(lambda: ran("weighted", "ok"), "a successful scheduled run of weighted", 60)
        until(lambda: ran("faulty", "failed"), "a failed scheduled run of faulty", 30)
        status = gw.admin("GET", "/status").json()
        metrics = httpx.get(f"{gw.url}/metrics").text
        dashboard = httpx.get(f"{gw.url}/dashboard/data").json()
        logs = gw.platform.logs("weighted")
        answer = httpx.get(f"{gw.url}/function/weighted", params={"x": 2}, timeout=60)  # wakes from zero
    store = CheckpointStore((project / "store").as_uri(), cache_dir=project / "check-cache")
    shown = {f["name"]: f["training"] for f in status["functions"]}

    weighted = shown["weighted"]
    assert (weighted["schedule"], weighted["timezone"]) == ("* * * * *", "UTC")
    assert weighted["data"] == (project / "data" / "weight.txt").as_uri() and weighted["next_run"] > 0
    ok = [r for r in weighted["runs"] if r["outcome"] == "ok"]
    skipped = [r for r in weighted["runs"] if r["outcome"] == "skipped"]
    assert ok[-1]["version"] == 1 and ok[-1]["ended"] - ok[-1]["started"] >= 2.5 * 60  # clock minutes
    assert skipped and all(r["reason"].startswith("overlapping: the run started") for r in skipped)
    assert all(r["version"] is None for r in skipped)
    assert store.versions("weighted") == [r["version"] for r in reversed(ok)]  # one per ok run, no more
    assert store.manifest("weighted", 1).metadata["metrics"] == {"weight": 3.0}  # from [train] data
    assert answer.status_code == 200 and answer.json() == {"predictions": [6.0]}  # v1 serves: 2 * 3

    failed = [r for r in shown["faulty"]["runs"] if r["outcome"] == "failed"][-1]
    assert "exited with status 1; nothing was published" in failed["reason"]
    assert "it published was withdrawn" in failed["reason"]
    assert "the evaluation after publishing failed" in failed["reason"]  # the last lines of its output
    assert "hunter2-secret" not in failed["reason"] and "postgresql://***@db.internal" in failed["reason"]
    assert store.versions("faulty") == [] and store.latest("faulty") is None

    assert 'fnserve_training_runs_total{function="weighted",outcome="ok"}' in metrics
    assert 'fnserve_training_runs_total{function="weighted",outcome="skipped"}' in metrics
    assert 'fnserve_training_runs_total{function="faulty",outcome="failed"}' in metrics
    assert 'fnserve_training_last_published_version{function="weighted"} 1.0' in metrics
    assert 'fnserve_training_last_success_timestamp_seconds{function="weighted"}' in metrics
    assert 'fnserve_training_running{function="weighted"}' in metrics
    board = {f["name"]: f["training"] for f in dashboard["functions"]}
    assert board["weighted"]["schedule"] == "* * * * *" and board["weighted"]["next_run"] > 0
    assert board["faulty"]["last_run"]["outcome"] in ("failed", "ok") and "reason" not in board["faulty"]
    assert any("weighted@train" in line and "training on file://" in line for line in logs)

    printed = "\n".join(line for f in status["functions"] for line in retraining.lines(f))
    assert "weighted: retraining '* * * * *' (UTC), next 2025-06-01" in printed
    assert "ok       v1" in printed and "skipped" in printed and "hunter2-secret" not in printed

    # A restarted gateway (real time now) shows the runs it kept.
    with running_gateway(project, []) as again:
        kept = training(again, "weighted")
    assert [r for r in kept["runs"] if r["outcome"] == "ok"][-1]["version"] == 1
    assert kept["running"] is None and kept["next_run"] > time.time()


def test_a_scheduled_retraining_is_rolled_out_and_a_bad_one_rolled_back(tmp_path: Path) -> None:
    """Issue 13's loop on the local target: the schedule retrains, the rollout judges the new
    checkpoint in shadow and canary, and a retraining on bad data never answers a caller."""

    from fnserve.gateway.rollout import RolloutPolicy
    from tests.support.probe import prober

    data = tmp_path / "data" / "weight.txt"
    data.parent.mkdir()
    data.write_text("2.0\n")
    folder = tmp_path / "functions" / "weighted"
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text((FNS / "weighted" / "predict.py").read_text())
    (folder / "train.py").write_text(WEIGHT_FROM_DATA)
    (folder / "function.toml").write_text(
        f'[train]\nschedule = "1-59/10 * * * *"\ndata = "{data.as_uri()}"\n'
    )
    store = CheckpointStore((tmp_path / "store").as_uri(), cache_dir=tmp_path / "publish-cache")
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "weight.txt").write_text("2.0")
    first = store.publish("weighted", seed)
    policy = RolloutPolicy.from_table(
        {
            "stages": [{"shadow": True, "requests": 40}, {"weight": 50, "requests": 40}, {"weight": 100}],
            "shadow_fraction": 0.5,
            "gates": {"mean_abs_diff": 0.5, "p99_latency_ratio": 50.0, "output_psi": False},
        },
        where="[rollout]",
    )
    stable = FunctionDeployment(
        "weighted",
        {"1": VersionDeployment(str(folder), 100, str(first))},
        Scaling(min_replicas=1),
        policy=policy,
    )
    data.write_text("2.02\n")  # the next retraining: a little better, close to stable
    # at 12:01, 12:11, ... by a clock 30 times too fast: a retraining every 20 s, then its rollout
    with running_gateway(tmp_path, [stable], rollouts=True, clock=fast_clock(speed=30.0)) as gw:
        gw.wait_ready("weighted", "1", 1)
        with prober(gw.url) as answers:

            def ended(candidate: str) -> dict[str, Any] | None:
                status = gw.status("weighted")
                rollout = status.get("rollout") or {}
                return (
                    status
                    if rollout.get("candidate") == candidate and rollout["status"] != "active"
                    else None
                )

            promoted = until(lambda: ended("ckpt2"), "the retrained checkpoint's rollout", 90)
            data.write_text("9\n")  # the next retraining learns something else entirely
            final = until(lambda: ended("ckpt3"), "the bad retraining's rollout", 90)
    runs = [r for r in final["training"]["runs"] if r["outcome"] == "ok"]
    assert [r["version"] for r in reversed(runs)][:2] == [2, 3]  # published by the schedule
    assert promoted["rollout"]["status"] == "promoted", promoted["events"]
    assert final["rollout"]["status"] == "rolled back" and final["rollout"]["stage"] == 0
    assert final["rollout"]["reason"].startswith("mean_abs_diff 6.98 (≤ 0.5)"), final["rollout"]["reason"]
    assert len(answers) >= 400 and all(a.status == 200 for a in answers)
    assert not any(a.value == pytest.approx(9.0) for a in answers)
    assert {v["version"]: v["weight"] for v in final["versions"]} == {"1": 0, "ckpt2": 100}

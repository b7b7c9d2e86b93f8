"""The training scheduler's rules with an injected clock and a scripted trainer (no process, no
container): runs never overlap, a failure is recorded with its reason and publishes nothing, a
success records its version, and the history survives a restart.

The trainer publishes to a real ``file://`` store, so "publishes nothing" is checked there.
"""

from __future__ import annotations

import asyncio
import calendar
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fnserve.gateway.runs import COMPACT_LINES, KEEP_RUNS, RunLog, TrainingRun
from fnserve.gateway.scheduler import TrainingScheduler, scheduler_for
from fnserve.project import ProjectSettings
from fnserve.runtime.store import CheckpointStore

MINUTE = 60.0
T0 = calendar.timegm((2025, 6, 1, 12, 0, 30)) * 1.0  # 30 s past noon, UTC
SECRET_URL = "postgresql://trainer:hunter2-secret@db.internal/shop"


class ScriptedTrainer:
    """A platform's ``run_training``, scripted: each run does the next of ``steps``."""

    def __init__(self, project: Path, steps: list[str]):
        self.settings = ProjectSettings.from_mapping(
            project, {}, {}, {"store": (project / "store").as_uri(), "cache": str(project / "cache")}
        )
        self.training_log = project / ".fnserve" / "deploy" / "training.jsonl"
        self.store = CheckpointStore(self.settings.store, cache_dir=project / "cache")
        self.steps, self.data_seen = list(steps), []  # type: ignore[var-annotated]
        self.release = threading.Event()  # lets a "slow" run end
        self.project = project

    def run_training(
        self, function: str, data: str | None, *, output: Callable[[str], None], cancel: threading.Event
    ) -> int:
        step = self.steps.pop(0)
        self.data_seen.append(data)
        output(f"reading {SECRET_URL}")
        output("epoch 1: loss 0.25")
        if step == "slow":
            while not (self.release.wait(0.02) or cancel.is_set()):
                pass
            if cancel.is_set():
                raise RuntimeError("killed")
        if step in ("ok", "slow", "publish then fail"):
            folder = self.project / f"model-{time.monotonic_ns()}"
            folder.mkdir()
            (folder / "weight.txt").write_text("2")
            version = self.store.publish(function, folder)
            if step != "publish then fail":
                return version
        raise RuntimeError("train.py exited with status 1; nothing was published")


def project_with_schedule(tmp_path: Path, schedule: str = "* * * * *") -> Path:
    folder = tmp_path / "functions" / "recs"
    folder.mkdir(parents=True)
    (folder / "function.toml").write_text(f'[train]\nschedule = "{schedule}"\ndata = "file:///data/b"\n')
    return tmp_path


def scheduler(trainer: ScriptedTrainer) -> tuple[TrainingScheduler, CollectorRegistry]:
    registry = CollectorRegistry()
    return TrainingScheduler(trainer, registry, tick_s=0.01), registry


def metric(registry: CollectorRegistry, line: str) -> bool:
    return line in generate_latest(registry).decode()


def test_a_run_starts_when_due_and_records_the_version_it_published(tmp_path: Path) -> None:
    trainer = ScriptedTrainer(project_with_schedule(tmp_path), ["ok", "ok"])
    sched, registry = scheduler(trainer)
    assert sched.tick(["recs"], T0) == []  # the first look only sets the next due time
    assert sched.describe("recs")["next_run"] == T0 + 30  # type: ignore[index]
    assert sched.tick(["recs"], T0 + 29) == []
    [run] = sched.tick(["recs"], T0 + 31)
    assert (run.outcome, run.due, run.started) == ("running", T0 + 30, T0 + 31)
    assert sched.wait(10)
    shown = sched.describe("recs")
    assert shown is not None and shown["running"] is None and shown["next_run"] == T0 + 90
    assert (shown["schedule"], shown["timezone"], shown["data"]) == ("* * * * *", "UTC", "file:///data/b")
    [done] = shown["runs"]
    assert (done["outcome"], done["version"], done["reason"]) == ("ok", 1, None)
    assert trainer.data_seen == ["file:///data/b"]  # [train] data is what the run reads
    assert metric(registry, 'fnserve_training_runs_total{function="recs",outcome="ok"} 1.0')
    assert metric(registry, 'fnserve_training_last_published_version{function="recs"} 1.0')
    assert metric(registry, 'fnserve_training_running{function="recs"} 0.0')
    next_run = registry.get_sample_value("fnserve_training_next_run_timestamp_seconds", {"function": "recs"})
    assert next_run == T0 + 90
    summary = sched.summary("recs")
    assert summary is not None and summary["last_run"]["version"] == 1 and "reason" not in summary["last_run"]


def test_a_run_due_while_the_last_one_goes_is_skipped_and_reported(tmp_path: Path) -> None:
    trainer = ScriptedTrainer(project_with_schedule(tmp_path), ["slow", "ok"])
    sched, registry = scheduler(trainer)
    sched.tick(["recs"], T0)
    [first] = sched.tick(["recs"], T0 + 30)
    [second] = sched.tick(["recs"], T0 + 90)  # a minute later the first still goes
    [third] = sched.tick(["recs"], T0 + 150)
    assert (first.outcome, second.outcome, third.outcome) == ("running", "skipped", "skipped")
    assert second.reason is not None and second.reason.startswith(
        "overlapping: the run started 2025-06-01 12:01"
    )
    assert sched.describe("recs")["running"]["id"] == first.id  # type: ignore[index]
    assert metric(registry, 'fnserve_training_running{function="recs"} 1.0')
    assert trainer.store.versions("recs") == []  # a skipped run publishes nothing
    trainer.release.set()
    assert sched.wait(10)
    [fourth] = sched.tick(["recs"], T0 + 210)  # the next due time after it ended: it runs
    assert fourth.outcome == "running" and sched.wait(10)
    outcomes = [r["outcome"] for r in sched.describe("recs")["runs"]]  # type: ignore[index]
    assert outcomes == ["ok", "ok", "skipped", "skipped"]  # newest first
    assert trainer.store.versions("recs") == [1, 2]
    assert metric(registry, 'fnserve_training_runs_total{function="recs",outcome="skipped"} 2.0')


def test_a_failed_run_publishes_nothing_and_says_why_without_secrets(tmp_path: Path) -> None:
    trainer = ScriptedTrainer(project_with_schedule(tmp_path), ["fail", "publish then fail", "ok"])
    sched, registry = scheduler(trainer)
    sched.tick(["recs"], T0)
    for minute in range(3):
        assert len(sched.tick(["recs"], T0 + 30 + minute * MINUTE)) == 1
        assert sched.wait(10)
    ok, withdrawn, failed = sched.describe("recs")["runs"]  # type: ignore[index]
    assert failed["outcome"] == "failed" and failed["version"] is None
    assert failed["reason"].startswith("train.py exited with status 1; nothing was published\nlast output:")
    assert "epoch 1: loss 0.25" in failed["reason"]
    assert (
        "hunter2-secret" not in failed["reason"] and "postgresql://***@db.internal/shop" in failed["reason"]
    )
    assert withdrawn["outcome"] == "failed" and "version 1 it published was withdrawn" in withdrawn["reason"]
    assert trainer.store.versions("recs") == [2]  # 1 was withdrawn (its number is not reused)
    assert (ok["outcome"], ok["version"]) == ("ok", 2)
    assert metric(registry, 'fnserve_training_runs_total{function="recs",outcome="failed"} 2.0')


def test_runs_are_kept_across_a_restart_and_one_cut_short_reads_failed(tmp_path: Path) -> None:
    project = project_with_schedule(tmp_path)
    trainer = ScriptedTrainer(project, ["ok", "slow"])
    sched, _ = scheduler(trainer)
    sched.tick(["recs"], T0)
    sched.tick(["recs"], T0 + 30)
    assert sched.wait(10)
    sched.tick(["recs"], T0 + 90)
    sched.tick(["recs"], T0 + 150)  # skipped: the slow one goes
    # The process dies here: the slow run's end is never written.
    again, registry = scheduler(ScriptedTrainer(project, []))

    async def restart() -> dict:  # type: ignore[type-arg]
        await again.start(lambda: ["recs"])
        shown = again.describe("recs")
        await again.stop()
        return shown  # type: ignore[return-value]

    shown = asyncio.run(restart())
    outcomes = [(r["outcome"], r["version"]) for r in shown["runs"]]
    assert outcomes == [("skipped", None), ("failed", None), ("ok", 1)]
    assert "the gateway stopped during this run" in shown["runs"][1]["reason"]
    assert shown["running"] is None and shown["next_run"] is not None
    assert metric(registry, 'fnserve_training_last_published_version{function="recs"} 1.0')
    trainer.release.set()
    assert sched.wait(10)


def test_stopping_stops_the_run_that_goes_and_records_it(tmp_path: Path) -> None:
    trainer = ScriptedTrainer(project_with_schedule(tmp_path), ["slow"])
    clock = iter([T0, T0 + 30, T0 + 31, T0 + 32, T0 + 33])
    sched = TrainingScheduler(trainer, CollectorRegistry(), tick_s=3600, clock=lambda: next(clock))

    async def life() -> None:
        await sched.start(lambda: ["recs"])  # sets the due time
        sched.tick(["recs"], T0 + 30)
        await sched.stop(timeout_s=10)

    asyncio.run(life())
    [run] = sched.describe("recs")["runs"]  # type: ignore[index]
    assert run["outcome"] == "failed" and run["reason"].startswith("stopped: the gateway shut down")
    assert trainer.store.versions("recs") == []


def test_a_schedule_edited_after_the_deploy_is_read_again_and_a_broken_one_reported(tmp_path: Path) -> None:
    project = project_with_schedule(tmp_path, "0 3 * * *")
    sched, registry = scheduler(ScriptedTrainer(project, []))
    sched.tick(["recs"], T0)
    assert sched.describe("recs")["next_run"] == calendar.timegm((2025, 6, 2, 3, 0, 0))  # type: ignore[index]
    toml = project / "functions" / "recs" / "function.toml"
    toml.write_text('[train]\nschedule = "0 5 * * *"\n')
    sched.tick(["recs"], T0 + 1)
    assert sched.describe("recs")["next_run"] == calendar.timegm((2025, 6, 2, 5, 0, 0))  # type: ignore[index]
    toml.write_text('[train]\nschedule = "nightly"\n')
    sched.tick(["recs"], T0 + 2)
    shown = sched.describe("recs")
    assert shown is not None and shown["next_run"] is None and shown["schedule"] is None
    assert (
        "functions/recs/function.toml: [train] schedule 'nightly' must be five cron fields" in shown["error"]
    )
    assert "fnserve_training_next_run_timestamp_seconds{" not in generate_latest(registry).decode()
    assert sched.tick(["other"], T0 + 3) == [] and sched.describe("other") is None  # no function.toml


def test_only_platforms_that_train_get_a_scheduler(tmp_path: Path) -> None:
    class NoTraining:
        target = "k8s"

    assert scheduler_for(NoTraining(), CollectorRegistry(), tick_s=1) is None
    trainer = ScriptedTrainer(tmp_path, [])
    assert isinstance(scheduler_for(trainer, CollectorRegistry(), tick_s=1), TrainingScheduler)


def test_the_history_file_is_compacted_to_the_kept_runs(tmp_path: Path) -> None:
    history = RunLog(tmp_path / "training.jsonl")
    for i in range(COMPACT_LINES + 5):
        history.append(TrainingRun(f"r{i}", "recs", due=i, started=i, ended=i + 1, outcome="ok", version=i))
    lines = (tmp_path / "training.jsonl").read_text().splitlines()
    assert len(lines) < COMPACT_LINES
    kept = RunLog(tmp_path / "training.jsonl").load()["recs"]
    assert len(kept) == KEEP_RUNS and kept[-1].id == f"r{COMPACT_LINES + 4}"
    (tmp_path / "training.jsonl").write_text('{"not": "a run"}\nnot json\n')
    assert RunLog(tmp_path / "training.jsonl").load() == {}


@pytest.fixture(autouse=True)
def _no_thread_left() -> object:
    before = set(threading.enumerate())
    yield None
    left = [t for t in set(threading.enumerate()) - before if t.name.startswith("training-")]
    for thread in left:
        thread.join(5)
    assert not [t for t in left if t.is_alive()]

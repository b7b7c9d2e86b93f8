"""The record of scheduled training runs: one :class:`TrainingRun` per run, kept as JSON lines, and
the gateway's Prometheus metrics of them (:class:`TrainingMetrics`).

The gateway appends a line when a run starts and one when it ends (same ``id``; the last wins), in
``training.jsonl`` beside the target's deployment state, so a restarted gateway shows the history.
A run that has a start line but no end line was cut short by the gateway stopping: it is read
back as failed. The file is rewritten with only the kept runs once it grows past ``COMPACT_LINES``.

    log = RunLog(Path(".fnserve/deploy/training.jsonl"))
    log.append(run)
    log.load()                         # {"recs": [oldest, ..., newest]}, KEEP_RUNS each at most

>>> run = TrainingRun("1a2b", "recs", due=60.0, started=60.2)
>>> TrainingRun.from_dict(run.to_dict()) == run
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("fnserve.gateway")

KEEP_RUNS = 20  # per function, in memory and in the file
COMPACT_LINES = 2000  # the file is rewritten with the kept runs past this many lines
OUTCOMES = ("running", "ok", "failed", "skipped")
CUT_SHORT = "the gateway stopped during this run; what it published, if anything, was not recorded"


@dataclass(frozen=True)
class TrainingRun:
    id: str
    function: str
    due: float  # the scheduled time (Unix seconds) this run is for
    started: float  # when it started (a skipped run: when it was due and refused)
    ended: float | None = None
    outcome: str = "running"  # running, ok, failed or skipped (overlapping: never started)
    version: int | None = None  # the checkpoint version it published (ok runs only)
    reason: str | None = None  # why it failed or was skipped, secrets masked

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainingRun:
        """A run from its JSON form; a ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a run is a JSON object")
        try:
            run = cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        if run.outcome not in OUTCOMES or not isinstance(run.function, str):
            raise ValueError(f"a run with outcome {run.outcome!r}")
        return run


class TrainingMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.runs = Counter(
            "fnserve_training_runs",
            "Scheduled training runs by outcome: ok, failed, skipped (overlapping)",
            ["function", "outcome"],
            registry=registry,
        )
        self.running = Gauge(
            "fnserve_training_running",
            "1 while a scheduled training run goes",
            ["function"],
            registry=registry,
        )
        self.last_success = Gauge(
            "fnserve_training_last_success_timestamp_seconds",
            "When the last successful scheduled training run ended",
            ["function"],
            registry=registry,
        )
        self.last_version = Gauge(
            "fnserve_training_last_published_version",
            "The checkpoint version the last successful scheduled run published",
            ["function"],
            registry=registry,
        )
        self.next_run = Gauge(
            "fnserve_training_next_run_timestamp_seconds",
            "When the next scheduled training run is due",
            ["function"],
            registry=registry,
        )


class RunLog:
    """Runs appended to a JSON-lines file; thread-safe (runs end in worker threads)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._lines = 0

    def load(self) -> dict[str, list[TrainingRun]]:
        """The kept runs of every function, oldest first; unreadable lines are skipped."""
        runs: dict[str, TrainingRun] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the training history %s: %s", self.path, exc)
            return {}
        lines = text.splitlines()
        for line in lines:
            try:
                run = TrainingRun.from_dict(json.loads(line))
            except ValueError:
                continue
            runs.pop(run.id, None)  # re-inserted: ordered by its last line
            runs[run.id] = run
        self._lines = len(lines)
        by_function: dict[str, list[TrainingRun]] = {}
        for run in runs.values():
            if run.outcome == "running":
                run = dataclasses.replace(run, ended=run.started, outcome="failed", reason=CUT_SHORT)
            by_function.setdefault(run.function, []).append(run)
        return {name: kept[-KEEP_RUNS:] for name, kept in by_function.items()}

    def append(self, run: TrainingRun) -> None:
        """Add one line (a run started or ended); a history that cannot be written is logged, not
        raised: the run itself matters more than its record."""
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a") as f:
                    f.write(json.dumps(run.to_dict(), sort_keys=True) + "\n")
                self._lines += 1
                if self._lines > COMPACT_LINES:
                    self._compact()
            except OSError as exc:
                log.warning("cannot write the training history %s: %s", self.path, exc)

    def _compact(self) -> None:
        kept = [run for runs in self.load().values() for run in runs]
        fd, temp = tempfile.mkstemp(prefix=".training-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.writelines(json.dumps(run.to_dict(), sort_keys=True) + "\n" for run in kept)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._lines = len(kept)

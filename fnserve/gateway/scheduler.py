"""Scheduled retraining on the local and docker targets: the gateway runs ``[train] schedule``.

On Kubernetes a CronJob retrains (:mod:`fnserve.k8s.jobs`); elsewhere the gateway does, through
its platform's ``run_training`` (a :class:`Trainer`: a ``train.py`` process on ``local``, a
container of the function's image on ``docker``), so the gateway itself knows no target. Every
``tick_s`` the scheduler reads ``[train]`` of each deployed function's ``function.toml``
(:mod:`fnserve.gateway.schedule`, again only when the file changed) and starts the runs that are
due, each in a worker thread of its own:

* runs of one function never overlap: a run due while the previous one still goes is not started,
  it is recorded as ``skipped`` (overlapping) and counted;
* a run that fails (non-zero exit, an error, the gateway stopping) publishes nothing: should its
  script have published before failing, that version is withdrawn. The run is recorded ``failed``
  with the reason and the last lines of its output, secrets masked;
* a run that succeeds is recorded ``ok`` with the checkpoint version it published.

Runs are kept per function (:mod:`fnserve.gateway.runs`, in the target's ``training.jsonl``) and
shown by ``/admin/status`` (``fn status``), ``/metrics`` and the dashboard. Due times are cron's
(UTC): a time missed while no gateway ran is not made up for, as with cron.

    scheduler = scheduler_for(platform, metrics.registry, tick_s=0.5)   # None: the target has no runs
    await scheduler.start(lambda: list(gateway.functions))
    scheduler.describe("recs")   # {"schedule": "0 3 * * *", "next_run": ..., "runs": [...], ...}

Tests pass ``clock`` (Unix seconds) to run a day of schedule in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from fnserve.gateway.runs import KEEP_RUNS, RunLog, TrainingMetrics, TrainingRun
from fnserve.gateway.schedule import ScheduledTraining, scheduled_training
from fnserve.project import FUNCTION_FILE, ConfigError, ProjectSettings, function_dir
from fnserve.runtime.errors import CheckpointError
from fnserve.runtime.redact import redact_url, scrub
from fnserve.runtime.store import CheckpointStore

log = logging.getLogger("fnserve.gateway")

Output = Callable[[str], None]
TAIL_LINES = 12  # of a failed run's output, kept in its reason
LINE_CHARS = 300
SHOWN_RUNS = 10  # newest first in /admin/status
STOP_WAIT_S = 30.0  # for runs to end (their processes or containers stopped) when the gateway stops
STOPPED = "stopped: the gateway shut down during the run"
# What was read of a function.toml: (mtime_ns, size), the schedule it sets, why it could not be read.
Read = tuple[tuple[int, int] | None, ScheduledTraining | None, str | None]


class Trainer(Protocol):
    """What a platform offers to run scheduled training (local and docker do; k8s has CronJobs)."""

    settings: ProjectSettings  # the project: functions/<name>/function.toml, the checkpoint store
    training_log: Path  # where the runs are kept (JSON lines), beside the deployment state

    def run_training(
        self, function: str, data: str | None, *, output: Output, cancel: threading.Event
    ) -> int:
        """Train ``function`` once on ``data`` (a URL, or None); return the checkpoint version it
        published. Blocking; output lines go to ``output``; a set ``cancel`` stops the run. Raises
        (its message says why) when the run failed or published nothing."""
        ...


@dataclass
class _Function:
    """One function's schedule as last read, its next due time and its runs."""

    plan: ScheduledTraining | None = None
    error: str | None = None  # why its [train] table could not be read (edited since the deploy)
    stamp: tuple[int, int] | None = None  # function.toml's (mtime_ns, size) when it was read
    next_due: float | None = None
    running: TrainingRun | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    runs: deque[TrainingRun] = field(default_factory=lambda: deque(maxlen=KEEP_RUNS))


def scheduler_for(
    platform: object, registry: CollectorRegistry, *, tick_s: float, clock: Callable[[], float] | None = None
) -> TrainingScheduler | None:
    """The scheduler of a platform that runs training (a :class:`Trainer`), else None."""
    if not callable(getattr(platform, "run_training", None)):
        return None
    trainer: Trainer = platform  # type: ignore[assignment]
    return TrainingScheduler(trainer, registry, tick_s=tick_s, clock=clock or time.time)


class TrainingScheduler:
    def __init__(
        self,
        trainer: Trainer,
        registry: CollectorRegistry,
        *,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ):
        self.trainer, self.tick_s, self.clock = trainer, tick_s, clock
        self.metrics = TrainingMetrics(registry)
        self.history = RunLog(trainer.training_log)
        self._functions: dict[str, _Function] = {}
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._store: CheckpointStore | None = None  # made when first needed: a run checks it
        self._stopped = False  # no run starts once the gateway stops

    # --- life ---------------------------------------------------------------------------------

    async def start(self, deployed: Callable[[], Iterable[str]]) -> None:
        """Read the kept runs, look at the schedules once, then every ``tick_s``."""
        for name, runs in (await asyncio.to_thread(self.history.load)).items():
            state = self._functions.setdefault(name, _Function())
            state.runs.extend(runs)
            ok = [r for r in runs if r.outcome == "ok" and r.ended is not None]
            if ok:
                self.metrics.last_success.labels(name).set(ok[-1].ended or 0)
                self.metrics.last_version.labels(name).set(ok[-1].version or 0)
        await asyncio.to_thread(self.tick, list(deployed()), self.clock())
        self._task = asyncio.get_running_loop().create_task(self._loop(deployed), name="training-scheduler")

    async def _loop(self, deployed: Callable[[], Iterable[str]]) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await asyncio.to_thread(self.tick, list(deployed()), self.clock())
            except Exception:  # the schedule must outlive a bad tick; the next one retries
                log.exception("training scheduler: a tick failed")

    async def stop(self, timeout_s: float = STOP_WAIT_S) -> None:
        """No run starts from now on; running ones are stopped and waited for (recorded failed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with self._lock:
            self._stopped = True
            for state in self._functions.values():
                state.cancel.set()
        await asyncio.to_thread(self.wait, timeout_s)

    def wait(self, timeout_s: float) -> bool:
        """Until no run goes (True), or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = [s.thread for s in self._functions.values() if s.thread is not None]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    # --- the schedule -------------------------------------------------------------------------

    def tick(self, names: Iterable[str], now: float) -> list[TrainingRun]:
        """Start (or skip, when the last run still goes) every deployed function's run due at
        ``now``; returns the runs started or skipped."""
        names = list(names)
        with self._lock:
            known = {name: (s.stamp, s.plan, s.error) for name, s in self._functions.items()}
        read = {name: self._read(name, known.get(name)) for name in names}  # file reads: not locked
        begun: list[TrainingRun] = []
        with self._lock:
            for name, state in self._functions.items():
                if name not in read:  # no longer deployed: its runs stay, its schedule goes
                    self._unschedule(name, state)
            for name in names:
                state = self._functions.setdefault(name, _Function())
                changed = self._take(name, state, read[name])
                plan = state.plan
                if plan is None:
                    self._unschedule(name, state)
                    continue
                if changed or state.next_due is None:
                    state.next_due = self._next(plan, now)
                elif now >= state.next_due and not self._stopped:
                    due, state.next_due = state.next_due, self._next(plan, now)
                    begun.append(self._begin(name, state, plan, due, now))
                self.metrics.next_run.labels(name).set(state.next_due)
        return begun

    def _unschedule(self, name: str, state: _Function) -> None:
        if state.next_due is not None:
            state.next_due = None
            with contextlib.suppress(KeyError):
                self.metrics.next_run.remove(name)

    def _read(self, name: str, known: Read | None) -> Read:
        """``(stamp, plan, error)`` of ``functions/<name>/function.toml``, read again only when the
        file changed since ``known`` was; no file, or no schedule in it: no plan."""
        try:
            path = function_dir(self.trainer.settings.project_dir, name) / FUNCTION_FILE
            info = path.stat()
        except (OSError, ValueError):
            return None, None, None
        stamp = (info.st_mtime_ns, info.st_size)
        if known is not None and known[0] == stamp:
            return known
        try:
            return stamp, scheduled_training(self.trainer.settings.project_dir, name), None
        except ConfigError as exc:
            return stamp, None, str(exc)

    def _take(self, name: str, state: _Function, read: Read) -> bool:
        """Keep what was read; whether the schedule changed."""
        stamp, plan, error = read
        if error and error != state.error:
            log.warning("training %s: not scheduled: %s", name, error)
        before = state.plan.schedule if state.plan else None
        state.stamp, state.plan, state.error = stamp, plan, error
        return (plan.schedule if plan else None) != before

    @staticmethod
    def _next(plan: ScheduledTraining, now: float) -> float:
        return plan.schedule.next_after(datetime.fromtimestamp(now, UTC)).timestamp()

    # --- runs ---------------------------------------------------------------------------------

    def _begin(
        self, name: str, state: _Function, plan: ScheduledTraining, due: float, now: float
    ) -> TrainingRun:
        run = TrainingRun(secrets.token_hex(6), name, due=due, started=now)
        if state.running is not None:
            going = datetime.fromtimestamp(state.running.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            run = dataclasses.replace(
                run,
                ended=now,
                outcome="skipped",
                reason=f"overlapping: the run started {going} still goes, and runs never overlap",
            )
            log.warning("training %s: the run due now is skipped: %s", name, run.reason)
            self._record(state, run)
            return run
        log.info("training %s: a scheduled run starts", name)
        state.running, state.cancel = run, threading.Event()
        state.thread = threading.Thread(
            target=self._run, args=(state, run, plan, state.cancel), name=f"training-{name}", daemon=True
        )
        self.metrics.running.labels(name).set(1)
        self.history.append(run)
        state.thread.start()
        return run

    def _run(
        self, state: _Function, run: TrainingRun, plan: ScheduledTraining, cancel: threading.Event
    ) -> None:
        """One run, in its own thread: the platform trains, this records how it went."""
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        before = self._published(run.function)
        try:
            if cancel.is_set():
                raise RuntimeError(STOPPED)
            version = self.trainer.run_training(run.function, plan.data, output=tail.append, cancel=cancel)
            done = dataclasses.replace(run, ended=self.clock(), outcome="ok", version=int(version))
            log.info("training %s: published version %d", run.function, version)
        except Exception as exc:
            reason = STOPPED if cancel.is_set() else str(exc)
            withdrawn = self._withdraw(run.function, before)
            if withdrawn:
                reason += f"\nversion {', '.join(map(str, withdrawn))} it published was withdrawn"
            if tail:
                reason += "\nlast output:\n" + "\n".join(line[:LINE_CHARS] for line in tail)
            done = dataclasses.replace(run, ended=self.clock(), outcome="failed", reason=scrub(reason))
            log.warning("training %s: the run failed: %s", run.function, done.reason)
        with self._lock:
            state.running = None
            self.metrics.running.labels(run.function).set(0)
            self._record(state, done)

    def _record(self, state: _Function, run: TrainingRun) -> None:
        state.runs.append(run)
        self.history.append(run)
        self.metrics.runs.labels(run.function, run.outcome).inc()
        if run.outcome == "ok" and run.ended is not None and run.version is not None:
            self.metrics.last_success.labels(run.function).set(run.ended)
            self.metrics.last_version.labels(run.function).set(run.version)

    def store(self) -> CheckpointStore:
        if self._store is None:
            settings = self.trainer.settings
            self._store = CheckpointStore(
                settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
            )
        return self._store

    def _published(self, function: str) -> int | None:
        """The function's latest version before a run (-1: none; None: the store did not say)."""
        try:
            latest = self.store().latest(function)
        except (CheckpointError, ValueError, ImportError):
            return None
        return -1 if latest is None else latest

    def _withdraw(self, function: str, before: int | None) -> list[int]:
        """Withdraw what a failed run published (versions newer than ``before``)."""
        if before is None:
            return []
        try:
            newer = [v for v in self.store().versions(function) if v > before]
            for version in newer:
                self.store().withdraw(function, version)
        except (CheckpointError, ValueError, ImportError) as exc:
            log.warning("training %s: cannot check what the failed run published: %s", function, exc)
            return []
        return newer

    # --- what is shown ------------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any] | None:
        """``/admin/status``'s ``training`` of one function; None when it has no schedule nor runs."""
        with self._lock:
            state = self._functions.get(name)
            if state is None or not (state.plan or state.runs or state.error or state.running):
                return None
            plan = state.plan
            return {
                "schedule": plan.schedule.expression if plan else None,
                "timezone": "UTC",
                "data": redact_url(plan.data) if plan and plan.data else None,
                "next_run": state.next_due,
                "running": state.running.to_dict() if state.running else None,
                "runs": [r.to_dict() for r in reversed(state.runs)][:SHOWN_RUNS],
                "error": state.error,
            }

    def summary(self, name: str) -> dict[str, Any] | None:
        """The dashboard's: schedule, next and last run, without reasons or the data URL."""
        described = self.describe(name)
        if described is None:
            return None
        last = described["runs"][0] if described["runs"] else None
        keys = ("started", "ended", "outcome", "version")
        return {
            "schedule": described["schedule"],
            "next_run": described["next_run"],
            "running": described["running"] is not None,
            "last_run": {k: last[k] for k in keys} if last else None,
        }

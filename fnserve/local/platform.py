"""The local platform: each replica is a ``python -m fnserve.runtime <function folder>`` process.

No Docker, no cluster: what tests and laptops use, and what makes the whole gateway testable.
The desired state lives in ``.fnserve/deploy/state.json``; replica processes are the gateway's
children (they stop when it stops, and the next ``fn gateway`` starts them again from the state).
Each writes its output to ``.fnserve/deploy/logs/<function>@<version>-<n>.log``, where
``fn logs`` reads it. It listens on a free loopback port and says which in its address file
(``.fnserve/deploy/run/<function>@<version>-<n>.json``, ``{"url", "pid"}``, written atomically
by the runtime). A replica is ready when its ``/readyz`` answers 200; one that exits is
replaced, with a growing pause if it keeps failing before it was ever ready, and its last
words (the runtime's one-line error) are what :meth:`LocalPlatform.last_failure` reports.
The gateway's scheduled training runs ``train.py`` as a process too (:meth:`run_training`), and
keeps its runs in ``.fnserve/deploy/training.jsonl``.

    platform = LocalPlatform(load_settings("."))
    platform.save_state(FunctionDeployment("double", {"1": VersionDeployment("functions/double")}))
    platform.scale("double", "1", 2)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from fnserve.gateway.platform import FunctionDeployment, PlatformError, Replica, VersionDeployment
from fnserve.gateway.statefile import StateFile
from fnserve.gateway.warmpool import POOL_RETRY_S, plan_version_pool
from fnserve.local.training import train_once
from fnserve.project import STATE_DIR, ProjectSettings
from fnserve.runtime.main import PROG

KEEP_LOG_FILES = 20  # per function
BACKOFF_S = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # pause before restarting a replica that failed n times
LAST_WORDS_CHARS = 300  # of a replica's last log line, reported as why it exited
log = logging.getLogger("fnserve.gateway")


@dataclass(eq=False)
class _Process:
    function: str
    version: str
    popen: subprocess.Popen[bytes]
    log: Path
    address_file: Path
    url: str = ""
    ready: bool = False
    draining: bool = False
    was_ready: bool = False
    runs: tuple[str, str] = ("", "")  # (folder, checkpoint version) it was started with
    armed: bool = False  # a standby whose /readyz says it stands by: SIGUSR1 makes it serve
    prepared: bool = False  # ... and has fetched its checkpoint and imported its framework


class LocalPlatform:
    target = "local"

    def __init__(
        self, settings: ProjectSettings, *, state_dir: Path | None = None, probe_timeout_s: float = 0.5
    ):
        self.settings = settings
        self.dir = state_dir or settings.project_dir / STATE_DIR / "deploy"
        self.state = StateFile(self.dir / "state.json")
        self.logs_dir = self.dir / "logs"
        self.run_dir = self.dir / "run"  # replicas' address files
        self.training_log = self.dir / "training.jsonl"  # the gateway's scheduled training runs
        self._lock = threading.RLock()
        self._procs: list[_Process] = []
        self._desired: dict[tuple[str, str], int] = {}
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}  # (failures, not before)
        self._exits: dict[tuple[str, str], str] = {}  # why a version's last replica exited unready
        self._standbys: list[_Process] = []  # the warm pool (fnserve.gateway.warmpool), never listed
        self._pool_paused: dict[tuple[str, str], float] = {}  # plain starts until (died, no memory)
        self._probe = httpx.Client(timeout=probe_timeout_s)

    # --- desired state ----------------------------------------------------------------------

    def load_state(self) -> dict[str, FunctionDeployment]:
        return self.state.read()

    def save_state(self, deployment: FunctionDeployment) -> None:
        for version in deployment.versions.values():
            self.folder(version)
        self.state.change(lambda functions: functions.__setitem__(deployment.name, deployment))

    def delete(self, function: str) -> None:
        self.state.change(lambda functions: functions.pop(function, None))
        with self._lock:
            for key in [k for k in self._desired if k[0] == function]:
                del self._desired[key]
            for proc in self._procs:
                if proc.function == function:
                    self._stop(proc)

    def folder(self, version: VersionDeployment) -> Path:
        """The function folder a version runs (its ``image`` locally), checked to exist."""
        path = Path(version.image)
        path = path if path.is_absolute() else self.settings.project_dir / path
        if not (path / "predict.py").is_file() and not (path.suffix == ".py" and path.is_file()):
            raise PlatformError(f"{version.image}: not a function folder (no predict.py there)", status=422)
        return path

    # --- replicas -----------------------------------------------------------------------------

    def replicas(self, function: str) -> list[Replica]:
        with self._lock:
            self._reconcile(function)
            procs = [p for p in self._procs if p.function == function]
        for proc in procs:
            self._observe(proc)
        return [
            Replica(function, p.version, p.url, p.ready, p.draining, str(p.popen.pid)) for p in procs if p.url
        ]

    def scale(self, function: str, version: str, replicas: int) -> None:
        if replicas < 0:
            raise PlatformError(f"cannot scale {function}@{version} to {replicas} replicas")
        with self._lock:
            self._desired[(function, version)] = replicas
            self._reconcile(function)

    def desired(self, function: str, version: str) -> int:
        return self._desired.get((function, version), 0)

    def _reconcile(self, function: str) -> None:
        """Reap exited processes; start or stop some so each version has its desired count."""
        now = time.monotonic()
        for proc in [p for p in self._procs if p.function == function and p.popen.poll() is not None]:
            self._procs.remove(proc)
            proc.address_file.unlink(missing_ok=True)
            if not proc.draining and not proc.was_ready:
                self._exits[(function, proc.version)] = self._last_words(proc)
            if not proc.draining:  # it died: count a failure unless it had been serving
                failures = (
                    0 if proc.was_ready else self._failures.get((function, proc.version), (0, 0))[0] + 1
                )
                pause = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                self._failures[(function, proc.version)] = (failures, now + pause)
        deployment = self.state.read().get(function)
        versions = deployment.versions if deployment else {}
        labels = {v for f, v in self._desired if f == function} | {
            p.version for p in self._procs if p.function == function
        }
        for label in labels:
            running = [
                p for p in self._procs if p.function == function and p.version == label and not p.draining
            ]
            # A replica started with another folder or checkpoint (the version was changed: a new
            # image, a pinned checkpoint) is replaced, rolling: it serves until its successors are ready.
            spec = versions.get(label)
            live = [p for p in running if spec is None or p.runs == _runs(spec)]
            outdated = [p for p in running if p not in live]
            want = self._desired.get((function, label), 0) if label in versions else 0
            _, not_before = self._failures.get((function, label), (0, 0.0))
            if len(live) < want and now >= not_before:
                for _ in range(want - len(live)):
                    self._procs.append(self._start(function, label, versions[label]))
            for proc in sorted(live, key=lambda p: (p.ready, -p.popen.pid))[: max(0, len(live) - want)]:
                self._stop(proc)
            if outdated and sum(p.ready for p in live) >= want:
                for proc in outdated:
                    self._stop(proc)
        self._keep_pool(function, deployment, now)

    def _keep_pool(self, function: str, deployment: FunctionDeployment | None, now: float) -> None:
        """Reap dead standbys, stop outdated ones, and start those the pool lacks (see warmpool)."""
        for proc in [p for p in self._standbys if p.function == function and p.popen.poll() is not None]:
            self._standbys.remove(proc)
            proc.address_file.unlink(missing_ok=True)
            if not proc.draining:
                key = (function, proc.version)
                self._pool_paused[key] = now + POOL_RETRY_S
                log.warning(
                    "%s@%s: a warm-pool standby exited (%s); plain starts for %.0f s",
                    function,
                    proc.version,
                    self._last_words(proc),
                    POOL_RETRY_S,
                )
        versions = deployment.versions if deployment else {}
        scaling = deployment.scaling if deployment else None
        starting = any(p.function == function and not p.ready and not p.draining for p in self._procs)
        labels = set(versions) | {p.version for p in self._standbys if p.function == function}
        for label in labels:
            spec, key = versions.get(label), (function, label)
            mine = [
                p for p in self._standbys if p.function == function and p.version == label and not p.draining
            ]
            fresh = [str(p.popen.pid) for p in mine if spec is not None and p.runs == _runs(spec)]
            outdated = [str(p.popen.pid) for p in mine if str(p.popen.pid) not in fresh]
            plan, self._pool_paused[key] = plan_version_pool(
                function,
                label,
                scaling if spec is not None else None,
                self._pool_paused.get(key, 0.0),
                now,
                fresh=fresh,
                outdated=outdated,
                starting=starting,
            )
            for proc in [p for p in mine if str(p.popen.pid) in plan.stop]:
                self._stop(proc)  # reaped above once it exited
            for _ in range(plan.start):
                assert spec is not None
                self._standbys.append(self._spawn(function, label, spec, standby=True))
        for proc in self._standbys:
            if proc.function == function and not proc.prepared and proc.popen.poll() is None:
                self._arm(proc)

    def standbys(self, function: str) -> dict[str, int]:
        """Prepared warm-pool standbys of each version (known here, without asking anyone)."""
        counts: dict[str, int] = {}
        for proc in self._standbys:
            if proc.function == function and proc.prepared and not proc.draining:
                counts[proc.version] = counts.get(proc.version, 0) + 1
        return counts

    def _arm(self, proc: _Process) -> None:
        """A standby is claimed only once its server answers: its SIGUSR1 handler is in place
        then (before, the signal's default action would end the process)."""
        if not proc.url:
            proc.url = read_address_file(proc.address_file, proc.popen.pid)
        if proc.url:
            try:
                said = self._probe.get(f"{proc.url}/readyz").json()
                proc.armed, proc.prepared = said.get("standby") is True, said.get("prepared") is True
            except (httpx.HTTPError, ValueError, AttributeError):
                proc.armed = False

    def _start(self, function: str, version: str, spec: VersionDeployment) -> _Process:
        """A replica: a standby of the warm pool claimed (SIGUSR1: it loads and serves), else a
        new process."""
        for proc in self._standbys:
            mine = proc.function == function and proc.version == version and proc.runs == _runs(spec)
            if mine and proc.armed and not proc.draining and proc.popen.poll() is None:
                self._standbys.remove(proc)
                proc.popen.send_signal(signal.SIGUSR1)
                log.info("%s@%s: claimed warm-pool standby %d", function, version, proc.popen.pid)
                return proc
        return self._spawn(function, version, spec)

    def _spawn(
        self, function: str, version: str, spec: VersionDeployment, *, standby: bool = False
    ) -> _Process:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._prune_logs(function)
        stem = f"{function}@{version}-{time.time_ns()}"
        log, address_file = self.logs_dir / f"{stem}.log", self.run_dir / f"{stem}.json"
        env = {
            **os.environ,
            "FNSERVE_STORE": self.settings.store,
            "FNSERVE_CACHE": str(self.settings.cache_dir),
        }
        env.update(COLUMNS="200", PYTHONUNBUFFERED="1")
        if self.settings.storage_options:
            env["FNSERVE_STORE_OPTIONS"] = json.dumps(dict(self.settings.storage_options))
        env.pop("FNSERVE_CHECKPOINT_VERSION", None)
        if spec.checkpoint_version != "latest":
            env["FNSERVE_CHECKPOINT_VERSION"] = spec.checkpoint_version
        env.pop("FNSERVE_ADDRESS_FILE", None)
        command = [sys.executable, "-m", "fnserve.runtime", str(self.folder(spec))]
        command += ["--host", "127.0.0.1", "--port", "0", "--address-file", str(address_file)]
        command += ["--standby"] if standby else []
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                command,
                cwd=self.settings.project_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        return _Process(function, version, popen, log, address_file, runs=_runs(spec))

    def _stop(self, proc: _Process) -> None:
        """SIGTERM: the runtime turns unready, finishes what it holds, and exits."""
        if not proc.draining and proc.popen.poll() is None:
            proc.popen.terminate()
        proc.draining, proc.ready = True, False

    def _observe(self, proc: _Process) -> None:
        if not proc.url:
            proc.url = read_address_file(proc.address_file, proc.popen.pid)
        if proc.url and not proc.draining:
            try:
                proc.ready = self._probe.get(f"{proc.url}/readyz").status_code == 200
            except httpx.HTTPError:
                proc.ready = False
            if proc.ready and not proc.was_ready:
                proc.was_ready = True
                self._failures.pop((proc.function, proc.version), None)
                self._exits.pop((proc.function, proc.version), None)

    def last_failure(self, function: str, version: str) -> str | None:
        """Why the last replica of ``function@version`` that exited before it was ready exited:
        its last log line (the runtime's one-line error, or a traceback's last line), or None.
        The gateway adds it to the 503 of requests that waited for a replica in vain."""
        with self._lock:
            self._reconcile(function)
            return self._exits.get((function, version))

    @staticmethod
    def _last_words(proc: _Process) -> str:
        try:
            with open(proc.log, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
                lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()]
        except OSError:
            lines = []
        status = proc.popen.returncode
        if status < 0:  # killed: whatever it printed last is not why
            return f"the replica was killed by signal {-status}"
        words = next((line for line in reversed(lines) if line), "").removeprefix(f"{PROG}: error: ")
        return words[:LAST_WORDS_CHARS] or f"the replica exited with status {status}"

    # --- scheduled training (fnserve.gateway.scheduler) -------------------------------------------

    def run_training(
        self, function: str, data: str | None, *, output: Callable[[str], None], cancel: threading.Event
    ) -> int:
        """``functions/<function>/train.py`` once, as a process; returns the version it published.
        Its output also goes to ``logs/<function>@train-<n>.log``, where ``fn logs`` shows it."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._prune_logs(function)
        log = self.logs_dir / f"{function}@train-{time.time_ns()}.log"
        return train_once(self.settings, function, data, output=output, cancel=cancel, log=log)

    # --- logs and shutdown ---------------------------------------------------------------------

    def logs(self, function: str, *, tail: int = 100) -> list[str]:
        files = sorted(self.logs_dir.glob(f"{function}@*.log"), key=lambda p: p.stat().st_mtime)[-5:]
        lines: list[str] = []
        for path in files:
            label = path.stem.rsplit("-", 1)[0]
            text = path.read_text(errors="replace").splitlines()[-tail:]
            lines += [f"{label} | {line.rstrip()}" for line in text]
        return lines[-tail:]

    def _prune_logs(self, function: str) -> None:
        live = {p.log for p in self._procs + self._standbys}
        files = sorted(self.logs_dir.glob(f"{function}@*.log"), key=lambda p: p.stat().st_mtime)
        for path in files[: max(0, len(files) - KEEP_LOG_FILES)]:
            if path not in live:
                path.unlink(missing_ok=True)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop every replica process: SIGTERM, a bounded wait for them to drain, then SIGKILL."""
        with self._lock:
            procs, self._procs = self._procs + self._standbys, []
            self._standbys = []
            self._desired.clear()
        for proc in procs:
            self._stop(proc)
        deadline = time.monotonic() + (self.settings.drain_timeout_s if timeout_s is None else timeout_s)
        for proc in procs:
            try:
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            proc.address_file.unlink(missing_ok=True)
        self._probe.close()


def read_address_file(path: Path, pid: int) -> str:
    """The URL a replica wrote to its address file, or "" while there is none (or a stale one).

    The runtime writes the file whole through a rename, so a partial object is never read; a
    file from another process (same name, another pid) is ignored.
    """
    try:
        written = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return ""
    if not isinstance(written, dict) or written.get("pid") != pid or not isinstance(written.get("url"), str):
        return ""
    return str(written["url"])


def create_platform(settings: ProjectSettings) -> LocalPlatform:
    """The ``local`` target's entry point (see :mod:`fnserve.gateway.targets`)."""
    return LocalPlatform(settings)


def _runs(spec: VersionDeployment) -> tuple[str, str]:
    """What a replica process of ``spec`` runs: changing either replaces it."""
    return spec.image, spec.checkpoint_version

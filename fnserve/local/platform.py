"""The local platform: each replica is an `fn serve <function folder> --port 0` process.

No Docker, no cluster: what tests and laptops use, and what makes the whole gateway testable.
The desired state lives in ``.fnserve/deploy/state.json``; replica processes are the gateway's
children (they stop when it stops, and the next ``fn gateway`` starts them again from the state).
Each writes its output to ``.fnserve/deploy/logs/<function>@<version>-<n>.log``, where
``fn logs`` reads it. A replica is ready when its ``/readyz`` answers 200; one that exits is
replaced, with a growing pause if it keeps failing before it was ever ready.

    platform = LocalPlatform(load_settings("."))
    platform.save_state(FunctionDeployment("double", {"1": VersionDeployment("functions/double")}))
    platform.scale("double", "1", 2)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from fnserve.gateway.platform import FunctionDeployment, PlatformError, Replica, VersionDeployment
from fnserve.gateway.statefile import StateFile
from fnserve.project import STATE_DIR, ProjectSettings

LISTENING_RE = re.compile(rb"listening on (http://\S+)")
KEEP_LOG_FILES = 20  # per function
BACKOFF_S = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # pause before restarting a replica that failed n times


@dataclass(eq=False)
class _Process:
    function: str
    version: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    ready: bool = False
    draining: bool = False
    was_ready: bool = False


class LocalPlatform:
    target = "local"

    def __init__(
        self, settings: ProjectSettings, *, state_dir: Path | None = None, probe_timeout_s: float = 0.5
    ):
        self.settings = settings
        self.dir = state_dir or settings.project_dir / STATE_DIR / "deploy"
        self.state = StateFile(self.dir / "state.json")
        self.logs_dir = self.dir / "logs"
        self._lock = threading.RLock()
        self._procs: list[_Process] = []
        self._desired: dict[tuple[str, str], int] = {}
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}  # (failures, not before)
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
            live = [
                p for p in self._procs if p.function == function and p.version == label and not p.draining
            ]
            want = self._desired.get((function, label), 0) if label in versions else 0
            _, not_before = self._failures.get((function, label), (0, 0.0))
            if len(live) < want and now >= not_before:
                for _ in range(want - len(live)):
                    self._procs.append(self._start(function, label, versions[label]))
            for proc in sorted(live, key=lambda p: (p.ready, -p.popen.pid))[: max(0, len(live) - want)]:
                self._stop(proc)

    def _start(self, function: str, version: str, spec: VersionDeployment) -> _Process:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._prune_logs(function)
        log = self.logs_dir / f"{function}@{version}-{time.time_ns()}.log"
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
        command = [sys.executable, "-m", "fnserve.cli", "serve", str(self.folder(spec))]
        command += ["--host", "127.0.0.1", "--port", "0"]
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                command,
                cwd=self.settings.project_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        return _Process(function, version, popen, log)

    def _stop(self, proc: _Process) -> None:
        """SIGTERM: the runtime turns unready, finishes what it holds, and exits."""
        if not proc.draining and proc.popen.poll() is None:
            proc.popen.terminate()
        proc.draining, proc.ready = True, False

    def _observe(self, proc: _Process) -> None:
        if not proc.url:
            try:
                found = LISTENING_RE.search(proc.log.read_bytes()[:4096])
            except OSError:
                found = None
            proc.url = found.group(1).decode() if found else ""
        if proc.url and not proc.draining:
            try:
                proc.ready = self._probe.get(f"{proc.url}/readyz").status_code == 200
            except httpx.HTTPError:
                proc.ready = False
            if proc.ready and not proc.was_ready:
                proc.was_ready = True
                self._failures.pop((proc.function, proc.version), None)

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
        live = {p.log for p in self._procs}
        files = sorted(self.logs_dir.glob(f"{function}@*.log"), key=lambda p: p.stat().st_mtime)
        for path in files[: max(0, len(files) - KEEP_LOG_FILES)]:
            if path not in live:
                path.unlink(missing_ok=True)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop every replica process: SIGTERM, a bounded wait for them to drain, then SIGKILL."""
        with self._lock:
            procs, self._procs = self._procs, []
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
        self._probe.close()


def create_platform(settings: ProjectSettings) -> LocalPlatform:
    """The ``local`` target's entry point (see :mod:`fnserve.gateway.targets`)."""
    return LocalPlatform(settings)

"""Run a function's ``train.py``: data in, a new checkpoint version out.

The script learns where to read and publish from the environment (see
:class:`fnserve.runtime.training.TrainContext`), so the same script runs here, in its
container image, or as a Kubernetes Job. ``run_locally`` is ``fn train NAME``; ``train_once`` is a
run of the gateway's schedule on the local target (its output captured, stoppable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fnserve.project import function_dir, function_names
from fnserve.runtime.databases import DataSourceError, check_readable, is_database_url
from fnserve.runtime.errors import CheckpointError, FnError
from fnserve.runtime.redact import redact_url
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import CheckpointStore

TRAIN_FILE = "train.py"
STOP_GRACE_S = 10.0  # a stopped scheduled run gets SIGTERM, then SIGKILL after this long
Output = Callable[[str], None]


class TrainError(FnError):
    """Training could not run or failed; nothing was published."""

    status = 500


@dataclass(frozen=True)
class TrainJob:
    function: str
    script: Path
    data: str | None = None  # training data (fsspec URL, database); the script generates data without it

    def environment(self, settings: Settings) -> dict[str, str]:
        env = {
            "FNSERVE_FUNCTION": self.function,
            "FNSERVE_STORE": settings.store,
            "FNSERVE_CACHE": str(settings.cache_dir),
            "FNSERVE_PROJECT": str(settings.project_dir),
        }
        if self.data:
            env["FNSERVE_DATA"] = self.data
        return env


def find_job(settings: Settings, function: str, data: str | None = None) -> TrainJob:
    try:
        script = function_dir(settings.project_dir, function) / TRAIN_FILE
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    if not script.is_file():
        raise TrainError(f"no training script for {function!r}: expected {script}")
    return TrainJob(function, script, data)


def trainable(settings: Settings) -> list[str]:
    """Functions of the project that have a train.py."""
    return function_names(settings.project_dir, TRAIN_FILE)


def run_locally(job: TrainJob, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Run the script in this Python, output streaming through; raises TrainError on failure.

    The script inherits the environment, database credentials (``PGPASSWORD``, ...) included. A
    database source is read here first (one row), so that a server that does not answer, a refused
    password, an unknown table or an empty one is a one-line error before training starts.
    """
    env = {**(environ if environ is not None else os.environ), **job.environment(settings)}
    check_source(job, env)
    result = subprocess.run([sys.executable, str(job.script)], cwd=settings.project_dir, env=env, check=False)
    if result.returncode != 0:
        raise TrainError(
            f"training {job.function!r} failed (exit code {result.returncode}); nothing was published"
        )


def train_once(
    settings: Settings,
    function: str,
    data: str | None,
    *,
    output: Output,
    cancel: threading.Event,
    log: Path | None = None,
) -> int:
    """One run of the function's train.py as a child process, as the gateway's schedule runs it:
    its output line by line to ``output`` (and into ``log``), stopped once ``cancel`` is set.
    Returns the version it published; raises TrainError when it failed or published nothing."""
    job = find_job(settings, function, data)
    store = CheckpointStore(
        settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
    )
    before = _latest(store, function)
    env = {**os.environ, **job.environment(settings), "PYTHONUNBUFFERED": "1"}
    if settings.storage_options:
        env["FNSERVE_STORE_OPTIONS"] = json.dumps(dict(settings.storage_options))
    with (
        open(log or os.devnull, "wb") as sink,
        subprocess.Popen(
            [sys.executable, str(job.script)],
            cwd=settings.project_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ) as popen,
    ):
        threading.Thread(target=_stop_when, args=(cancel, popen), daemon=True).start()
        assert popen.stdout is not None
        for raw in popen.stdout:
            sink.write(raw)
            output(raw.decode(errors="replace").rstrip())
        code = popen.wait()
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        raise TrainError(f"{job.script.name} of {function!r} {how}; nothing was published")
    after = _latest(store, function)
    if after is None or after == before:
        raise TrainError(f"{job.script.name} of {function!r} finished but published no new version")
    return after


def _stop_when(cancel: threading.Event, popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM the run once ``cancel`` is set (SIGKILL if it lingers); return when it ends."""
    while popen.poll() is None:
        if cancel.wait(0.2):
            popen.terminate()
            try:
                popen.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                popen.kill()
            return


def _latest(store: CheckpointStore, function: str) -> int | None:
    try:
        return store.latest(function)
    except CheckpointError as exc:
        raise TrainError(f"cannot read the store {redact_url(store.root)}: {exc}") from None


def check_source(job: TrainJob, environ: Mapping[str, str]) -> None:
    """Refuse, naming the problem, a database source the training could not read; other data is
    read by the script itself."""
    if job.data and is_database_url(job.data):
        try:
            check_readable(job.data, environ)
        except DataSourceError as exc:
            raise TrainError(f"cannot train {job.function!r}: {exc.message}") from None

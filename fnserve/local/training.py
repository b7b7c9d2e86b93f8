"""Run a function's ``train.py``: data in, a new checkpoint version out.

The script learns where to read and publish from the environment (see
:class:`fnserve.runtime.training.TrainContext`), so the same script runs here, in its
container image, or as a Kubernetes Job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fnserve.project import function_dir, function_names
from fnserve.runtime.errors import FnError
from fnserve.runtime.settings import Settings

TRAIN_FILE = "train.py"


class TrainError(FnError):
    """Training could not run or failed; nothing was published."""

    status = 500


@dataclass(frozen=True)
class TrainJob:
    function: str
    script: Path
    data: str | None = None  # fsspec URL of training data; the script generates data without it

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
    """Run the script in this Python, output streaming through; raises TrainError on failure."""
    env = {**(environ if environ is not None else os.environ), **job.environment(settings)}
    result = subprocess.run([sys.executable, str(job.script)], cwd=settings.project_dir, env=env, check=False)
    if result.returncode != 0:
        raise TrainError(
            f"training {job.function!r} failed (exit code {result.returncode}); nothing was published"
        )

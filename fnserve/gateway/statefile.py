"""Deployment state in one JSON file, written atomically and changed under a file lock.

The local platform keeps ``.fnserve/deploy/state.json``; the gateway and a CLI command may change
it at the same time, so every read-modify-write holds an exclusive ``flock`` and every write goes
to a temporary file renamed over the old one (a reader never sees half a file).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fnserve.gateway.platform import FunctionDeployment, PlatformError

Functions = dict[str, FunctionDeployment]


class StateFile:
    def __init__(self, path: Path):
        self.path = path

    def read(self) -> Functions:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PlatformError(f"{self.path}: cannot read the deployment state: {exc}") from None
        functions = data.get("functions", {}) if isinstance(data, dict) else None
        if not isinstance(functions, dict):
            raise PlatformError(f"{self.path}: expected {{'functions': {{...}}}}")
        try:
            return {name: FunctionDeployment.from_dict(d) for name, d in functions.items()}
        except ValueError as exc:
            raise PlatformError(f"{self.path}: {exc}") from None

    def change(self, edit: Callable[[Functions], object]) -> Functions:
        """Read, let ``edit`` change the mapping in place, write back; all under the lock."""
        with self._locked():
            functions = self.read()
            edit(functions)
            self._write({"functions": {name: d.to_dict() for name, d in sorted(functions.items())}})
            return functions

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, data: Any) -> None:
        fd, temp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

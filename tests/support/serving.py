"""Run `fn serve` as a real process on an ephemeral loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str):
        self.proc, self.url = proc, url
        self.output: list[str] = []


def start_serve(project: Path, *targets: Path, extra_env: dict[str, str] | None = None) -> Served:
    env = {**os.environ, "FNSERVE_STORE": f"file://{project}/store", "COLUMNS": "200", **(extra_env or {})}
    cmd = [sys.executable, "-m", "fnserve.cli", "serve", *map(str, targets), "--port", "0"]
    proc = subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    url = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if url is None and (m := re.search(r"listening on (http://\S+)", line)):
            url = m.group(1)
        if url and "ready" in line and "/function/" in line:
            served = Served(proc, url)
            served.output = lines
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
            return served
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise AssertionError("fn serve did not become ready:\n" + "".join(lines))


def stop(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.kill()
    served.proc.wait()
    if served.proc.stdout is not None:
        served.proc.stdout.close()

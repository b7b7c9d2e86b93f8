"""The machine, the load on it and the versions of everything measured, for RESULTS.md."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from harness import WORK, ensure_wrk
from scenarios import ROOT, checkpoint

OWN_PACKAGES = ("tensorflow-cpu", "hypercorn", "starlette", "orjson", "pyarrow", "numpy")
PEER_PACKAGES = {
    "mlserver": ("mlserver", "uvicorn", "fastapi"),
    "litserve": ("litserve", "uvicorn", "fastapi"),
    "bentoml": ("bentoml",),
}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return round(kib / 2**20, 1)


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    return (done.stdout or done.stderr).strip()


def peer_versions(peer: str) -> dict[str, str]:
    python = str(WORK / "venvs" / peer / "bin" / "python")
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    return dict(json.loads(run([python, "-c", code, *PEER_PACKAGES[peer], "tensorflow-cpu"]) or "{}"))


def describe(peers: list[str]) -> dict[str, Any]:
    own = {"fnserve": run(["git", "describe", "--always", "--dirty"])}
    for package in OWN_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            own[package] = metadata.version(package)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": run([ensure_wrk(), "--version"]).splitlines()[0].split(" Copyright")[0],
        "load_before": load_average(),
        "checkpoints": {f: checkpoint(f).name for f in ("recs", "tagger")},
        "fnserve_versions": own,
        "peer_versions": {p: peer_versions(p) for p in peers},
    }

"""Warm-up before ready, measured: the first request after a cold start with and without it, side
by side in one run.

For each function, the newest trained version (not an ``fn optimize`` variant) is copied twice
into a scratch store: as it was published (with its representative rows: the runtime replays them
through the function at batch 1 and a full batch before it reports ready) and without them
(nothing to replay: the first caller pays for graph tracing and first allocations). Then,
alternating the two over several starts (this machine's speed drifts over minutes),
``python -m fnserve.runtime`` pinned to core 0 is timed from spawning to ready, then the first and
the second request. The warm-up is worth it when the first request with it is close to the
second, and the time to ready grows by no more than it saves.

    .venv/bin/python benchmarks/warm_up.py                       # recs and tagger, 5 starts each
    .venv/bin/python benchmarks/warm_up.py --functions recs --starts 3

Prints a table of p50s; writes the figures to .bench/results/warm-up-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cold_start import QUERIES, ROOT, _pin, _predict, _train_missing, _wait_ready, _wait_url

from fnserve.project import ProjectSettings
from fnserve.runtime.evaluation import REPRESENTATIVE_FILE
from fnserve.runtime.store import MANIFEST_NAME, CheckpointStore

SCRATCH = ROOT / ".bench" / "warm-up"
KINDS = ("warm-up", "no warm-up")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--functions", default="recs,tagger", help="comma-separated example functions")
    parser.add_argument("--starts", type=int, default=5, help="cold starts of each kind per function")
    args = parser.parse_args()
    functions = [name.strip() for name in args.functions.split(",") if name.strip()]
    _train_missing(functions)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    store_url = (SCRATCH / "store").as_uri()
    results: dict[str, Any] = {}
    for name in functions:
        versions = _versions(name, store_url)
        runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        for round_ in range(args.starts):
            for kind in KINDS if round_ % 2 == 0 else reversed(KINDS):
                runs[kind].append(_start(name, store_url, versions[kind]))
        results[name] = runs
    for name, runs in results.items():
        print(f"\n{name} (p50 of {args.starts} starts; pinned to core 0)")
        print(f"{'':12}{'ready s':>10}{'first request ms':>18}{'second request ms':>19}{'warm-up s':>11}")
        for kind, starts in runs.items():
            p50 = {key: statistics.median(s[key] for s in starts) for key in starts[0]}
            print(
                f"{kind:12}{p50['ready_s']:>10.2f}{p50['first_ms']:>18.1f}{p50['second_ms']:>19.1f}"
                f"{p50['warm_up_s']:>11.3f}"
            )
    out = ROOT / ".bench" / "results" / f"warm-up-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")


def _versions(name: str, store_url: str) -> dict[str, int]:
    """The newest version of ``name`` published into the scratch store with and without its rows."""
    settings = ProjectSettings.load(ROOT, os.environ)
    source = CheckpointStore(settings.store, cache_dir=settings.cache_dir)
    trained = [v for v in source.versions(name) if not source.manifest(name, v).metadata.get("lineage")]
    if not trained:
        raise SystemExit(f"no trained version of {name!r}: run `.venv/bin/fn train {name}`")
    newest = trained[-1]  # the float32 model as trained (fn optimize's variants have a lineage)
    fetched = source.fetch(name, newest)
    if not (fetched.path / REPRESENTATIVE_FILE).is_file():
        raise SystemExit(f"{name} version {newest} has no {REPRESENTATIVE_FILE}: retrain it")
    scratch = CheckpointStore(store_url, cache_dir=SCRATCH / "publish-cache")
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind in KINDS:
            copy = Path(folder) / kind
            shutil.copytree(fetched.path, copy, ignore=shutil.ignore_patterns(MANIFEST_NAME, ".fnserve-*"))
            if kind == "no warm-up":
                (copy / REPRESENTATIVE_FILE).unlink()
            out[kind] = scratch.publish(name, copy)
    return out


def _start(name: str, store_url: str, version: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fnserve-warm-") as scratch:
        address_file = Path(scratch) / "address.json"
        command = [*_pin(), sys.executable, "-m", "fnserve.runtime", str(ROOT / "functions" / name)]
        command += ["--port", "0", "--address-file", str(address_file), "--checkpoint-version", str(version)]
        environ = {
            **os.environ,
            "FNSERVE_STORE": store_url,
            "FNSERVE_CACHE": str(SCRATCH / "cache"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        log = open(Path(scratch) / "log", "w+b")  # noqa: SIM115 - read after the process ends
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = _wait_url(proc, "runtime", address_file, log)
            with httpx.Client(timeout=30) as client:
                _wait_ready(client, url, proc, log)
                ready = time.perf_counter() - started
                timings = []
                for _ in range(2):
                    began = time.perf_counter()
                    answer = _predict(client, url, name)
                    timings.append((time.perf_counter() - began) * 1000)
                    assert answer.status_code == 200, answer.text
                described = client.get(f"{url}/functions").json()["functions"][0]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    return {
        "ready_s": ready,
        "first_ms": timings[0],
        "second_ms": timings[1],
        "warm_up_s": described.get("warm_up_s") or 0.0,
    }


if __name__ == "__main__":
    assert set(QUERIES) >= {"recs", "tagger"}
    main()

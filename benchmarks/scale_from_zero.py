"""Scale from zero to the first answer through the gateway, in parts, with and without the warm pool.

For each target (local processes, docker containers) and function (recs, tagger; checkpoint v1 by
default: the float32 SavedModel training makes, which needs TensorFlow), a gateway is started as
``benchmarks/gateway.py`` starts it (one version; replica on core 0, gateway on core 1), the
function is set to ``min_replicas = 0`` with 1 s of idleness, and then, ``--starts`` times, the
benchmark waits until it has scaled to zero and times one request from a caller: the request that
wakes it. Starts alternate between ``warm_pool = 0`` (plain: a new process or container) and
``warm_pool = 1`` (a standby, prepared before, is claimed), so the machine's drift hits both alike;
before a pooled start it waits until the pool's standby is prepared, and before every start for 1 s
of quiet.

Each start's parts are the gateway's own record (``last_cold_start`` in ``GET
/admin/functions/NAME``: start, import, fetch, framework, load, warm_up, other, ready, first_answer,
total), which adds up to what the caller saw, less the caller's own connection.

    .venv/bin/python benchmarks/scale_from_zero.py                          # both targets, both functions
    .venv/bin/python benchmarks/scale_from_zero.py --targets local --functions recs --starts 3

Targets (issue 14), recs: docker p50 <= 1.5 s and max <= 2.5 s over 5 starts; local p50 <= 1.0 s.
Prints a table per target and function; writes .bench/results/scale-from-zero-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cold_start import _predict
from gateway import ROOT, Bench, DockerBench

PARTS = ("start", "import", "fetch", "framework", "load", "warm_up", "other", "ready", "first_answer")
TARGETS = {"recs": {"docker": (1.5, 2.5), "local": (1.0, None)}}  # (p50, max) seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="local,docker", help="comma-separated: local, docker")
    parser.add_argument("--functions", default="recs,tagger", help="comma-separated example functions")
    parser.add_argument("--checkpoint", default="1", help="checkpoint version to serve (default 1)")
    parser.add_argument("--starts", type=int, default=5, help="cold starts per function, target and pool")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    verdicts: list[str] = []
    out = ROOT / ".bench" / "results" / f"scale-from-zero-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for target in args.targets.split(","):
        for function in args.functions.split(","):
            results.append(measure(target, function, args.checkpoint, args.starts))
            verdicts += report(results[-1])  # each as soon as it is measured, and saved
            out.write_text(json.dumps({"results": results, "verdicts": verdicts}, indent=2))
    print("\n" + "\n".join(verdicts))
    print(f"\nraw results: {out.relative_to(ROOT)}")


def measure(target: str, function: str, checkpoint: str, starts: int) -> dict[str, Any]:
    folder = ROOT / "functions" / function
    bench = (DockerBench if target == "docker" else Bench)(function, folder, checkpoint_version=checkpoint)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "pool": []}
    try:
        bench.start()
        print(f"{target} {function}@v{checkpoint}: {starts} cold starts each, plain and pool alternating")
        for i in range(starts * 2):
            mode = "plain" if i % 2 == 0 else "pool"
            runs[mode].append(cold_start(bench, function, pool=mode == "pool"))
            shown = runs[mode][-1]
            print(
                f"  {mode:5} caller {shown['caller_s']:.3f} s  gateway total {shown.get('total_s', 0):.3f} s"
            )
    finally:
        bench.stop()
    return {"target": target, "function": function, "checkpoint": checkpoint, "runs": runs}


def cold_start(bench: Bench | DockerBench, function: str, *, pool: bool) -> dict[str, Any]:
    """Scale to zero with the pool on or off, then time the request that wakes the function."""
    change = {"min_replicas": 0, "scale_to_zero_after_s": 1, "warm_pool": 1 if pool else 0}
    bench.admin.post(f"/admin/functions/{function}/scale", json=change).raise_for_status()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        version = bench.status()["versions"][0]
        if not version["replicas"] and (version.get("standby", 0) >= 1) == pool:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"{function} did not settle at zero replicas (pool {pool}) within 180 s")
    time.sleep(1.0)  # quiet: the last replica's exit and the standby's start are over
    before = (bench.status()["last_cold_start"] or {}).get("at")
    memory: dict[str, float] = {}
    if pool and isinstance(bench, Bench):  # the local target: the standby is the gateway's child
        standbys = [pid for pid in _children(bench.proc.pid) if "--standby" in _cmdline(pid)]
        memory["standby_rss_mb"] = max((_rss_mb(pid) for pid in standbys), default=0.0)
    with httpx.Client(base_url=bench.url, timeout=120) as client:
        began = time.perf_counter()
        answer = _predict(client, "", function)
        seen_s = time.perf_counter() - began
    answer.raise_for_status()
    record: dict[str, Any] = {}
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:  # the gateway records the start once the answer is back
        record = bench.status()["last_cold_start"] or {}
        if record.get("at") != before and "total_s" in record:
            break
        time.sleep(0.1)
    if isinstance(bench, Bench):
        replicas = bench.status()["versions"][0]["replicas"]
        memory["replica_rss_mb"] = max((_rss_mb(int(r["id"])) for r in replicas), default=0.0)
    return {"caller_s": round(seen_s, 3), **record, **memory}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        found += [int(c) for c in children]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def report(result: dict[str, Any]) -> list[str]:
    target, function, runs = result["target"], result["function"], result["runs"]
    print(f"\n{function}@v{result['checkpoint']} from zero to its first answer, {target} target")
    print(f"{'':14}{'plain p50':>10}{'max':>8}{'pool p50':>10}{'max':>8}")
    for part in ("caller", "total", *PARTS):
        cells = []
        for mode in ("plain", "pool"):
            values = [r[f"{part}_s"] for r in runs[mode] if f"{part}_s" in r]
            cells += [statistics.median(values), max(values)] if values else [float("nan")] * 2
        print(
            f"{part:14}" + "".join(f"{v:>10.3f}" if i % 2 == 0 else f"{v:>8.3f}" for i, v in enumerate(cells))
        )
    verdicts = []
    for mode in ("plain", "pool"):
        callers = sorted(r["caller_s"] for r in runs[mode])
        parts = {p: statistics.median(r.get(f"{p}_s", 0.0) for r in runs[mode]) for p in PARTS}
        largest = max(parts, key=lambda p: parts[p])
        p50, top = statistics.median(callers), callers[-1]
        line = f"{function} {target} {mode}: p50 {p50:.2f} s, max {top:.2f} s; largest part {largest}"
        wanted = TARGETS.get(function, {}).get(target)
        if wanted and mode == "pool":
            ok = p50 <= wanted[0] and (wanted[1] is None or top <= wanted[1])
            limit = f"p50 <= {wanted[0]} s" + (f", max <= {wanted[1]} s" if wanted[1] else "")
            line += f" (target {limit}: {'PASS' if ok else 'FAIL'})"
        verdicts.append(line)
        print(line)
    standby_mb = [r["standby_rss_mb"] for r in runs["pool"] if r.get("standby_rss_mb")]
    replica_mb = [r["replica_rss_mb"] for r in runs["plain"] + runs["pool"] if r.get("replica_rss_mb")]
    if standby_mb and replica_mb:
        line = (
            f"{function} {target}: a prepared standby holds {statistics.median(standby_mb):.0f} MB (RSS), "
            f"a serving replica {statistics.median(replica_mb):.0f} MB"
        )
        verdicts.append(line)
        print(line)
    plain = statistics.median(r["caller_s"] for r in runs["plain"])
    pool = statistics.median(r["caller_s"] for r in runs["pool"])
    print(f"pool vs plain, p50: {pool / plain:.2f}x")
    return verdicts


if __name__ == "__main__":
    main()

"""fnserve against the model limit, the protocol limit and its peers: one run, one machine.

Every server is pinned to core 0 and wrk to core 1; each serves the same SavedModel through the
same serving signature. The run measures, in order: the in-process model limit, then each
target (fnserve, the protocol limit, MLServer, LitServe and BentoML with their batching on and
off) in every scenario it takes part in, one server at a time, with a warm-up before each
measurement. It writes the raw results to .bench/results/ and the table, the machine and the
four targets of issue 3 to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/compare.py            # full run, ~11 minutes
    .venv/bin/python benchmarks/compare.py --quick    # smoke run, ~3 minutes
    .venv/bin/python benchmarks/compare.py --only fnserve,mlserver --no-report
    .venv/bin/python benchmarks/compare.py --rounds 2    # each measurement twice, minutes apart

The first run also makes each peer's virtual environment (.bench/venvs/<peer>, a few minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import environment
import report
import scenarios as sc
from harness import SERVER_CORE, WORK, Server, ensure_wrk, free_port, pinned, probe, run_wrk
from scenarios import ROOT, Request, Scenario
from targets import HERE, Target, all_targets

FNSERVE_PENDING_FORMATS = (
    "Arrow",
    "Arrow photo column",
    "Arrow pixels (uint8 tensor)",
    "v2 JSON",
    "v2 binary",
)


def ensure_venv(peer: str) -> None:
    """Make or refresh ``.bench/venvs/<peer>`` from its requirements (skipped when unchanged)."""
    requirements = HERE / "peers" / peer / "requirements.txt"
    venv = WORK / "venvs" / peer
    marker = venv / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text() == digest:
        return
    print(f"setting up {venv} (once; a few minutes for TensorFlow)", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    marker.write_text(digest)


def wait_for_idle(max_wait_s: float) -> None:
    """Other work on the machine skews every number: give it a chance to finish first."""
    deadline = time.monotonic() + max_wait_s
    while environment.load_average()[0] >= 0.5 and time.monotonic() < deadline:
        time.sleep(10)
    if (load := environment.load_average()[0]) >= 0.5:
        print(f"warning: the machine is busy (1-min load average {load}); numbers will be noisy", flush=True)


def model_limits(seconds: float, windows: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(HERE / "limits.py"),
        "model",
        "--seconds",
        str(seconds),
        "--windows",
        str(windows),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(pinned(SERVER_CORE, argv), capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def predictions_in(body: bytes) -> int | None:
    """How many predictions an answer holds: fnserve/TF Serving, v2, a bare list, or Arrow."""
    try:
        answer = json.loads(body)
    except ValueError:
        try:
            import pyarrow as pa

            return int(pa.ipc.open_stream(body).read_all().num_rows)
        except (pa.ArrowInvalid, OSError):
            return None
    if isinstance(answer, list):
        return len(answer)
    if isinstance(answer, dict) and isinstance(answer.get("predictions"), list):
        return len(answer["predictions"])
    if isinstance(answer, dict) and answer.get("outputs"):
        return int(answer["outputs"][0]["shape"][0])
    return None


def measure(
    target: Target, server: Server, s: Scenario, label: str, request: Request, args: argparse.Namespace
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": s.key,
        "target": target.name,
        "role": target.role,
        "peer": target.peer,
        "batched": target.batched,
        "format": label,
    }
    url = server.url
    status, body = probe(url, request)
    count = predictions_in(body) if status == 200 else None
    if status != 200 or count not in (s.instances, None):
        detail = (
            f"HTTP {status}: {body[:160].decode(errors='replace')}"
            if status != 200
            else f"{count} predictions"
        )
        pending = target.role == "fnserve" and label in FNSERVE_PENDING_FORMATS and status in (404, 405, 415)
        print(f"  {s.key:<11} {label:<26} {'pending' if pending else 'FAILED'}: {detail}", flush=True)
        return {**row, "status": "pending" if pending else "failed", "detail": detail}
    folder = WORK / "run" / "wrk" / f"{target.name}-{s.key}-{label}".replace(" ", "_").replace("/", "_")
    run_wrk(url, request, s.concurrency, args.warmup, folder)
    windows = []
    for _ in range(args.windows):
        cpu_before = server.cpu_seconds()
        window = run_wrk(url, request, s.concurrency, args.seconds, folder)
        windows.append((window, server.cpu_seconds() - cpu_before))
    # Other processes on the machine can only slow a server down: the best window is the
    # closest to what it does on a quiet machine. Its latencies go with it.
    result, cpu_s = max(windows, key=lambda w: w[0].rps)
    row |= {
        "status": "ok" if result.errors == 0 else "errors",
        "requests": result.requests,
        "errors": result.errors,
        "rps": result.rps,
        "pred_per_s": result.rps * s.instances,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "server_cpu_share": cpu_s / result.seconds,  # 1.0: the server core was all its own
        "cpu_us_per_request": cpu_s / max(result.requests, 1) * 1e6,
        # what the server would do with the core to itself: robust to other load on the machine
        "pred_per_cpu_s": result.requests * s.instances / cpu_s if cpu_s > 0 else None,
        "windows_rps": [round(w.rps, 1) for w, _ in windows],
    }
    print(
        f"  {s.key:<11} {label:<26} {result.rps:9.0f} req/s {row['pred_per_s']:10.0f} pred/s"
        f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors {result.errors}"
        f"  cpu {row['cpu_us_per_request']:6.0f} us/req ({row['server_cpu_share']:.0%} of core)",
        flush=True,
    )
    return row


def best_of_rounds(
    rounds: list[tuple[dict[str, Any], list[dict[str, Any]]]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each model limit and each measurement (target, scenario, format) at its best round."""
    limits: dict[str, Any] = {}
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for round_limits, rows in rounds:
        for key, value in round_limits.items():
            if key not in limits or value["predictions_per_s"] > limits[key]["predictions_per_s"]:
                limits[key] = value
        for row in rows:
            key = (row["target"], row.get("scenario"), row.get("format"))
            kept = best.get(key)
            if kept is None or (row.get("status") == "ok" and row.get("rps", 0) > kept.get("rps", 0)):
                best[key] = row
    return limits, list(best.values())


def run_target(target: Target, args: argparse.Namespace) -> list[dict[str, Any]]:
    plans = [(sc.SCENARIOS[k], target.requests(sc.SCENARIOS[k])) for k in target.scenarios]
    if not plans:
        return []
    print(f"{target.name}:", flush=True)
    rows = []
    try:
        with target.server(free_port()) as server:
            for s, requests in plans:
                for label, request in requests.items():
                    rows.append(measure(target, server, s, label, request, args))
    except RuntimeError as exc:
        print(f"  FAILED: {exc}", flush=True)
        rows.append({"target": target.name, "role": target.role, "status": "failed", "detail": str(exc)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (3 s per measurement)")
    parser.add_argument("--seconds", type=float, help="seconds per measuring window (default 5, quick 3)")
    parser.add_argument(
        "--windows", type=int, help="measuring windows, the best one kept (default 3, quick 1)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure everything this many times, one round after another, keeping each one's best "
        "(this machine's speed drifts over minutes; rounds spread each measurement over the run)",
    )
    parser.add_argument("--only", help="comma-separated: fnserve,protocol,mlserver,litserve,bentoml")
    parser.add_argument("--scenarios", help=f"comma-separated subset of {','.join(sc.SCENARIOS)}")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite benchmarks/RESULTS.md")
    parser.add_argument(
        "--render", metavar="RESULTS_JSON", help="only rewrite RESULTS.md from a run's raw results"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        help="wait up to this many seconds for a 1-min load average < 0.5",
    )
    args = parser.parse_args()
    if args.render:
        results = json.loads(Path(args.render).read_text())
        print(f"report: {report.write(results, HERE / 'RESULTS.md')}")
        print(report.targets_text(results))
        return
    args.seconds = args.seconds or (3.0 if args.quick else 5.0)
    args.windows = args.windows or (1 if args.quick else 3)
    args.warmup = 1.0 if args.quick else 3.0
    wanted = set(args.only.split(",")) if args.only else None
    targets = [
        t
        for t in all_targets()
        if wanted is None or (t.peer or t.role.replace("limit", "protocol")) in wanted
    ]
    if args.scenarios:
        keep = set(args.scenarios.split(","))
        targets = [replace(t, scenarios=tuple(k for k in t.scenarios if k in keep)) for t in targets]

    ensure_wrk()
    for peer in sorted({t.peer for t in targets if t.peer}):
        ensure_venv(peer)
    sc.checkpoint("recs"), sc.checkpoint("tagger")  # fail early, naming `fn train --missing`
    wait_for_idle(args.wait_idle)
    started = time.time()
    env_before = environment.describe(sorted({t.peer for t in targets if t.peer}))
    print(f"load average before: {env_before['load_before']}", flush=True)
    rounds = []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {number} of {args.rounds}", flush=True)
        print("model limit (in-process serving signature, core 0):", flush=True)
        round_limits = model_limits(2.0, args.windows)
        for key, value in round_limits.items():
            print(
                f"  {key:<11} {value['predictions_per_s']:12.0f} pred/s  p50 {value['p50_ms']:.3f} ms",
                flush=True,
            )
        rounds.append((round_limits, [row for target in targets for row in run_target(target, args)]))
    limits, runs = best_of_rounds(rounds)
    results = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "duration_s": round(time.time() - started),
        "quick": args.quick,
        "seconds": args.seconds,
        "windows": args.windows,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "environment": env_before | {"load_after": environment.load_average()},
        "scenarios": {k: vars(s) for k, s in sc.SCENARIOS.items()},
        "model_limits": limits,
        "runs": runs,
    }
    out = WORK / "results" / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"raw results: {out.relative_to(ROOT)}  ({results['duration_s']} s)")
    if not args.no_report:
        path = report.write(results, HERE / "RESULTS.md")
        print(f"report: {Path(path).relative_to(ROOT)}")
    print(report.targets_text(results))


if __name__ == "__main__":
    main()

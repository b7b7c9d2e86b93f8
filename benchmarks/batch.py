"""``fn batch`` against what bounds it, side by side in one run (issue 15's targets).

* In-process: ``fn batch recs`` over 2,000,000 rows (Parquet, 65,536-row groups) against the model
  limit at the same batch size (1,024 rows, recs' max_batch_size): the SavedModel's signature with
  the vocabularies' id lookups called in a loop, limits.py's measurement (``timed_loop``, ``RecsModel``).
  Both score the same version, the newest SavedModel one, and both have the whole machine. Peak RSS
  of ``fn batch`` over 200,000 and over 2,000,000 rows, against the model's own (the peak of the
  limit's process: the model loaded and called). Beside it, the stricter bound: the same loop
  calling the model the way fnserve does (``fnserve.load_model``'s direct call into the signature,
  0.6x the public call's time at batch 1,024 in ``model_call.py``), so that fnserve's cheaper model
  call is not counted as the rest of ``fn batch`` being cheap.
* Against a server: ``fn batch recs --url`` over 1,000,000 rows at 256 rows per request, 8 in
  flight, against ``fn serve``'s own Arrow throughput at 256 rows per request (compare.py's
  recs-b256 Arrow measurement: wrk, 8 connections, the best of 3 windows), the same server; fn serve
  pinned to core 0 and the client (wrk, then fn batch, also the best of 3 runs) to core 1.

Each round measures everything once, alternating, since this machine's speed drifts over minutes;
ratios are given per round and for the best of each measurement over the rounds.

    .venv/bin/python benchmarks/batch.py                  # 3 rounds, ~6 minutes; writes RESULTS-batch.md
    .venv/bin/python benchmarks/batch.py --rounds 1 --no-report
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import environment
import numpy as np
import scenarios as sc
from compare import measure, wait_for_idle
from harness import LOADGEN_CORE, WORK, ensure_wrk, free_port, pinned
from targets import HERE, all_targets

BATCH_SIZE = 1024  # recs' max_batch_size: what fn batch calls the model with in-process
SERVED_ROWS = 256  # rows per request, as compare.py's recs-b256 scenario
CONCURRENCY = 8  # requests in flight, as the scenario's connections
SIZES = (200_000, 2_000_000)
SERVED_ROWS_TOTAL = 1_000_000  # rows a --url run scores: a few seconds, as one of wrk's windows
TARGETS = {"model": 0.70, "served": 0.80, "rss_mb": 300, "flat_mb": 64}
DATA = WORK / "batch"


def savedmodel_version() -> int:
    """The newest published version that is a SavedModel (what the model limit loads)."""
    versions = [
        int(p.name)
        for p in (sc.STORE / "recs").glob("*")
        if (p / "fnserve-manifest.json").exists() and (p / "saved_model.pb").exists()
    ]
    if not versions:
        raise SystemExit("no SavedModel version of recs: run `.venv/bin/fn train recs`")
    return max(versions)


def dataset(rows: int) -> Path:
    """``rows`` recs instances (the scenarios' values, drawn column by column) and a booking id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = DATA / f"recs-{rows}.parquet"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rows)
    country = rng.integers(len(sc.COUNTRIES), size=rows)
    table = pa.table(
        {
            "booking_id": np.arange(rows, dtype=np.int64),
            "user_country": np.asarray(sc.COUNTRIES)[country],
            "user_language": np.asarray(sc.LANGUAGES)[country],
            "day_of_week": rng.integers(1, 8, rows),
            "season": np.asarray(sc.SEASONS)[rng.integers(len(sc.SEASONS), size=rows)],
            "hotel_price": np.round(rng.uniform(40, 400, rows), 2),
            "hotel_id": rng.integers(1, 5000, rows),
        }
    )
    pq.write_table(table, path, row_group_size=65_536)
    return path


def model_limit(version: int, seconds: float, direct: bool = False) -> dict[str, float]:
    """In this process (a child of the run, whose peak RSS the run reads): limits.py's loop at
    BATCH_SIZE; ``direct``: the same loop calling the model as fnserve does (``fnserve.load_model``,
    its direct call into the signature, ``benchmarks/model_call.py``) instead of the public way."""
    from limits import timed_loop
    from peers.recs_model import RecsModel

    from fnserve import load_model

    folder = sc.STORE / "recs" / str(version)
    recs = RecsModel(folder)
    columns = sc.recs_columns(sc.recs_rows(BATCH_SIZE, seed=BATCH_SIZE))
    if direct:
        model, price = load_model(folder), np.asarray(columns["hotel_price"], np.float32)
        found = timed_loop(lambda: model(**recs.ids(columns), hotel_price=price)["probability"], seconds, 3)
    else:
        found = timed_loop(lambda: recs(columns), seconds, windows=3)
    return {"pred_per_s": found["calls_per_s"] * BATCH_SIZE, "p50_ms": found["p50_ms"]}


def run_subprocess(argv: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any], float]:
    """``argv`` as a child; its JSON and its own peak RSS (MB), from wait4's resource usage."""
    environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200", **(env or {})}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=sc.ROOT, env=environ, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own resource usage: its peak RSS
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if code:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv[:8])} ... failed ({code}):\n{err.read().decode()[-3000:]}")
    text = out.decode()
    return json.loads(text[text.index("{") :]), usage.ru_maxrss / 1024


def fn_batch(
    source: Path, output: Path, *extra: str, core: int | None = None
) -> tuple[dict[str, Any], float]:
    shutil.rmtree(output, ignore_errors=True)
    argv = [
        sys.executable,
        "-m",
        "fnserve.cli",
        "batch",
        "recs",
        "--input",
        str(source),
        "--output",
        str(output),
    ]
    argv += ["--key", "booking_id", "--json", *extra]
    return run_subprocess(pinned(core, argv) if core is not None else argv)


def in_process_round(version: int, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, __file__, "model-limit", "--version", str(version), "--seconds", str(seconds)]
    limit, limit_rss = run_subprocess(argv)
    direct, _ = run_subprocess([*argv, "--direct"])
    row: dict[str, Any] = {"model_pred_per_s": limit["pred_per_s"], "model_rss_mb": limit_rss}
    row["direct_pred_per_s"] = direct["pred_per_s"]
    for rows in SIZES:
        summary, rss = fn_batch(dataset(rows), DATA / f"out-{rows}", "--version", str(version))
        assert summary["complete"] and summary["scored"] == rows, summary
        row[f"batch_{rows}_rows_per_s"] = summary["rows_per_s"]
        row[f"batch_{rows}_rss_mb"] = rss
        row[f"batch_{rows}_wall_s"] = summary["seconds"] + summary["load_s"]
    row["ratio"] = row[f"batch_{SIZES[-1]}_rows_per_s"] / row["model_pred_per_s"]
    row["direct_ratio"] = row[f"batch_{SIZES[-1]}_rows_per_s"] / row["direct_pred_per_s"]
    print(
        f"  model limit @{BATCH_SIZE} {row['model_pred_per_s']:>10,.0f} pred/s"
        f"  (peak RSS {limit_rss:,.0f} MB)\n"
        f"  ... called as fnserve calls it {row['direct_pred_per_s']:>10,.0f} pred/s\n"
        + "".join(
            f"  fn batch {rows:>9,} rows {row[f'batch_{rows}_rows_per_s']:>10,.0f} rows/s  "
            f"(peak RSS {row[f'batch_{rows}_rss_mb']:,.0f} MB)\n"
            for rows in SIZES
        )
        + f"  ratio {row['ratio']:.2f}x (to the model called as fnserve does: {row['direct_ratio']:.2f}x)",
        flush=True,
    )
    return row


def served_rounds(rounds: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    fnserve = next(t for t in all_targets() if t.role == "fnserve")
    scenario = sc.SCENARIOS["recs-b256"]
    request = fnserve.requests(scenario)["Arrow"]
    found = []
    with fnserve.server(free_port()) as server:
        for number in range(1, rounds + 1):
            print(f"against fn serve, round {number} of {rounds}:", flush=True)
            wrk = measure(fnserve, server, scenario, "Arrow", request, args)
            rates = []
            for _ in range(args.windows):  # as wrk's windows: the best one kept
                summary, _ = fn_batch(
                    dataset(SERVED_ROWS_TOTAL),
                    DATA / "out-url",
                    *(
                        "--url",
                        server.url,
                        "--batch-size",
                        str(SERVED_ROWS),
                        "--concurrency",
                        str(CONCURRENCY),
                    ),
                    core=LOADGEN_CORE,
                )
                assert summary["complete"] and summary["scored"] == SERVED_ROWS_TOTAL, summary
                rates.append(summary["rows_per_s"])
            row = {
                "serve_pred_per_s": wrk["pred_per_s"],
                "batch_rows_per_s": max(rates),
                "batch_windows": rates,
            }
            row["ratio"] = row["batch_rows_per_s"] / row["serve_pred_per_s"]
            print(
                f"  fn batch --url {row['batch_rows_per_s']:>10,.0f} rows/s  ratio {row['ratio']:.2f}x",
                flush=True,
            )
            found.append(row)
    return found


def verdicts(local: list[dict[str, Any]], served: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """Each target: what it is, what was measured (best of the rounds; each round's ratio), whether met."""
    return (local_verdicts(local) if local else []) + (served_verdicts(served) if served else [])


def local_verdicts(local: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    big, small = SIZES[-1], SIZES[0]
    model = max(r["model_pred_per_s"] for r in local)
    batch = max(r[f"batch_{big}_rows_per_s"] for r in local)
    model_rss = max(r["model_rss_mb"] for r in local)
    rss_big = max(r[f"batch_{big}_rss_mb"] for r in local)
    rss_small = max(r[f"batch_{small}_rss_mb"] for r in local)
    direct = max(r["direct_pred_per_s"] for r in local)
    rounds = ", ".join(f"{r['ratio']:.2f}x" for r in local)
    direct_rounds = ", ".join(f"{r['direct_ratio']:.2f}x" for r in local)
    return [
        (
            f"in-process >= {TARGETS['model']:.0%} of the model limit @{BATCH_SIZE}",
            f"{batch / model:.2f}x ({batch:,.0f} vs {model:,.0f} rows/s; rounds: {rounds})",
            batch / model >= TARGETS["model"],
        ),
        (
            f"stricter: in-process >= {TARGETS['model']:.0%} of that loop calling the model as fnserve does",
            f"{batch / direct:.2f}x ({batch:,.0f} vs {direct:,.0f} rows/s; rounds: {direct_rounds})",
            batch / direct >= TARGETS["model"],
        ),
        (
            f"peak RSS within {TARGETS['rss_mb']} MB of the model's own",
            f"+{rss_big - model_rss:,.0f} MB ({rss_big:,.0f} vs {model_rss:,.0f} MB)",
            rss_big - model_rss <= TARGETS["rss_mb"],
        ),
        (
            f"peak RSS flat from {small:,} to {big:,} rows (within {TARGETS['flat_mb']} MB)",
            f"{rss_small:,.0f} -> {rss_big:,.0f} MB ({rss_big - rss_small:+,.0f} MB)",
            abs(rss_big - rss_small) <= TARGETS["flat_mb"],
        ),
    ]


def served_verdicts(served: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    serve = max(r["serve_pred_per_s"] for r in served)
    url = max(r["batch_rows_per_s"] for r in served)
    rounds = ", ".join(f"{r['ratio']:.2f}x" for r in served)
    return [
        (
            f"--url >= {TARGETS['served']:.0%} of fn serve's Arrow at {SERVED_ROWS} rows/request",
            f"{url / serve:.2f}x ({url:,.0f} vs {serve:,.0f} rows/s; rounds: {rounds})",
            url / serve >= TARGETS["served"],
        )
    ]


def report(results: dict[str, Any], path: Path) -> None:
    big, small = SIZES[-1], SIZES[0]
    lines = [
        "# fn batch: results",
        "",
        f"Run {results['started']} ({results['duration_s']} s), `{results['command']}`, on {results['cpu']}, "
        f"load average {results['load_before']} before and {results['load_after']} after.",
        f"In-process: recs version {results['version']} (SavedModel), batches of {BATCH_SIZE}; "
        f"--url: `fn serve` of recs (latest), {SERVED_ROWS} rows per request, {CONCURRENCY} in flight.",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
        *(
            f"| {what} | {value} | **{'PASS' if ok else 'FAIL'}** |"
            for what, value, ok in results["verdicts"]
        ),
        "",
        "Each verdict compares the best round of each measurement (other load on the machine only slows "
        "a measurement down; compare.py keeps the best too); each round's own ratio, measured minutes "
        "apart, is in the table below. The in-process rates are of the scoring (the model loaded); "
        "each peak RSS is its own process's (wait4).",
        "",
        f"| round | model limit pred/s | ... called as fnserve does | fn batch {small:,} rows/s "
        f"| fn batch {big:,} rows/s | ratio | ratio to the latter "
        f"| peak RSS MB: model, {small:,}, {big:,} | fn serve Arrow pred/s | fn batch --url rows/s | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for number in range(1, max(len(results["in_process"]), len(results["served"])) + 1):
        local = results["in_process"][number - 1] if number <= len(results["in_process"]) else None
        served = results["served"][number - 1] if number <= len(results["served"]) else None
        cells = [
            str(number),
            f"{local['model_pred_per_s']:,.0f}",
            f"{local['direct_pred_per_s']:,.0f}",
            *(f"{local[f'batch_{rows}_rows_per_s']:,.0f}" for rows in SIZES),
            f"{local['ratio']:.2f}x",
            f"{local['direct_ratio']:.2f}x",
            ", ".join(
                f"{local[key]:,.0f}" for key in ("model_rss_mb", *(f"batch_{r}_rss_mb" for r in SIZES))
            ),
        ]
        if served is not None:
            cells += [f"{served['serve_pred_per_s']:,.0f}", f"{served['batch_rows_per_s']:,.0f}"]
            cells.append(f"{served['ratio']:.2f}x")
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    limit = sub.add_parser("model-limit", help="(internal) the model limit, as JSON")
    limit.add_argument("--version", type=int, required=True)
    limit.add_argument("--seconds", type=float, default=2.0)
    limit.add_argument("--direct", action="store_true", help="call the model as fnserve does")
    parser.add_argument(
        "--rounds", type=int, default=3, help="measure everything this many times, alternating"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="seconds per wrk window (3 windows, the best kept)"
    )
    parser.add_argument("--only", choices=("in-process", "served"), help="one comparison, not both")
    parser.add_argument("--no-report", action="store_true", help="do not write benchmarks/RESULTS-batch.md")
    parser.add_argument(
        "--wait-idle", type=float, default=0, help="first wait up to this long for a quiet machine"
    )
    args = parser.parse_args()
    if args.command == "model-limit":
        print(json.dumps(model_limit(args.version, args.seconds, args.direct)))
        return
    args.warmup, args.windows = 3.0, 3
    ensure_wrk()
    version = savedmodel_version()
    for rows in (*SIZES, SERVED_ROWS_TOTAL):
        dataset(rows)
    wait_for_idle(args.wait_idle)
    started, load_before = time.time(), environment.load_average()
    local = []
    for number in range(1, args.rounds + 1) if args.only != "served" else ():
        print(f"in-process, round {number} of {args.rounds}:", flush=True)
        local.append(in_process_round(version, 2.0))
    served = served_rounds(args.rounds, args) if args.only != "in-process" else []
    results = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "duration_s": round(time.time() - started),
        "command": " ".join(["benchmarks/batch.py", *sys.argv[1:]]),
        "cpu": f"{environment.cpu_model()} ({os.cpu_count()} cores)",
        "load_before": load_before,
        "load_after": environment.load_average(),
        "version": version,
        "in_process": local,
        "served": served,
        "verdicts": verdicts(local, served),
    }
    out = WORK / "results" / time.strftime("batch-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for what, value, ok in results["verdicts"]:
        print(f"{'PASS' if ok else 'FAIL'}  {what}: {value}")
    if not args.no_report:
        report(results, HERE / "RESULTS-batch.md")
        print(f"report: {(HERE / 'RESULTS-batch.md').relative_to(sc.ROOT)}")


if __name__ == "__main__":
    main()

"""What `fn optimize` buys: every variant of a function beside its float32 version, in one run.

For one trained (float32 SavedModel) version and every variant published from it by
``fn optimize`` (quantized, frozen), it measures side by side:

- the function's own call (predict.py + the model, what the batcher runs) in-process, pinned to
  core 0: p50 at batch 1 and predictions/s at ``--batch`` (default: the function's
  max_batch_size), the versions alternating within every round;
- for the tagger, predictions/s through ``fn serve`` with 64 images per request in a binary form
  (Open Inference Protocol binary tensor of decoded uint8 pixels): one server per version, all up at
  once, pinned to core 0, measured in turn by wrk on core 1, alternating within every round;

next to what `fn optimize` recorded in each variant's manifest (size, the task's metric). The
verdict of each ratio is the median over the rounds of that round's ratio to the float32 version
(measured seconds apart, so drift between rounds cancels).

    .venv/bin/python benchmarks/optimize.py --function tagger       # in-process + fn serve at 64/request
    .venv/bin/python benchmarks/optimize.py --function recs         # in-process (batch 1 and 1024)
    .venv/bin/python benchmarks/optimize.py --function tagger --base 3 --rounds 5

Targets (issue 12): tagger's best quantized variant >= 2x the float32 version's predictions/s
through fn serve at 64 images/request with mean average precision within 1 point; recs' best
variant's batch-1 call <= 0.8x the float32 one's with AUC within 0.005; the float16 checkpoint
<= 55% of the float32 one's bytes. Writes .bench/results/optimize-<function>-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios as sc
from harness import WORK, Server, free_port, probe, run_wrk
from targets import fnserve_requests

from fnserve.project import ProjectSettings
from fnserve.runtime import evaluation
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.loader import discover
from fnserve.runtime.store import CheckpointStore

METRIC = {"recs": "roc_auc", "tagger": "mean_average_precision"}
SERVED_FORMAT = "v2 binary pixels (UINT8 tensor)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--function", default="tagger", choices=sorted(METRIC))
    parser.add_argument("--base", type=int, help="the float32 version (default: the newest trained one)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each measures every version once")
    parser.add_argument("--batch", type=int, help="the large batch (default: the function's max_batch_size)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per served window (tagger)")
    parser.add_argument("--no-serve", action="store_true", help="only the in-process measurements")
    args = parser.parse_args()
    settings = ProjectSettings.load(sc.ROOT)
    store = CheckpointStore(
        settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
    )
    versions = _versions(store, args.function, args.base)
    print("versions: " + ", ".join(f"{v} ({row['technique']})" for v, row in versions.items()), flush=True)

    in_process, batch = _in_process(store, args.function, versions, args)
    served = {} if args.no_serve or args.function != "tagger" else _served(args.function, versions, args)
    results = {"versions": versions, "batch": batch, "in_process": in_process, "served": served}
    _report(args.function, results)
    out = WORK / "results" / f"optimize-{args.function}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out.relative_to(sc.ROOT)}")


def _versions(store: CheckpointStore, function: str, base: int | None) -> dict[int, dict[str, Any]]:
    """The base version and every non-table variant made from it, with what their manifests say."""
    rows: dict[int, dict[str, Any]] = {}
    base_metric = None
    published = store.versions(function)
    manifests = {v: store.manifest(function, v) for v in published}
    if base is None:
        trained = [v for v, m in manifests.items() if not m.metadata.get("lineage")]
        if not trained:
            raise SystemExit(f"no trained version of {function!r}: run `fn train {function}`")
        base = max(trained)
    for version, manifest in manifests.items():
        lineage = manifest.metadata.get("lineage") or {}
        if version != base and (
            lineage.get("base_version") != base or lineage.get("technique") == "precompute"
        ):
            continue
        rows[version] = {
            "technique": lineage.get("technique", "float32 (trained)"),
            # the model's own files: not the evaluation data, reference and manifest fnserve adds
            "bytes": sum(e.size for path, e in manifest.files.items() if not path.startswith("fnserve-")),
            "folder_bytes": sum(entry.size for entry in manifest.files.values()),
            "metric": manifest.metadata.get("metrics", {}).get(METRIC[function]),
        }
        measured_base = (manifest.metadata.get("optimize") or {}).get("base", {}).get("metrics", {})
        if METRIC[function] in measured_base:  # the trained version, as fn optimize evaluated it
            base_metric = measured_base[METRIC[function]]
    if rows[base]["metric"] is None:
        rows[base]["metric"] = base_metric
    if len(rows) < 2:
        raise SystemExit(
            f"no variant of {function} version {base}: run `fn optimize {function} --quantize int8`"
        )
    return dict(sorted(rows.items()))


def _in_process(
    store: CheckpointStore, function: str, versions: dict[int, dict[str, Any]], args: argparse.Namespace
) -> tuple[dict[str, dict[int, list[float]]], int]:
    """p50 at batch 1 and predictions/s at the large batch of each version's function call, pinned."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {0})
    (found,) = [f for f in discover([sc.ROOT / "functions" / function]) if f.spec.name == function]
    served = {}
    for version in versions:
        fn = ServedFunction(found, store, str(version))
        fn.load()
        served[version] = fn
    base_path = served[min(versions)].loaded.path  # type: ignore[union-attr]
    data = evaluation.read(Path(base_path))
    if data is None:
        raise SystemExit(f"{function} version {min(versions)} has no evaluation data: retrain it")
    columns = evaluation.served_columns(found.schema, data.inputs, "evaluation data")
    batch = args.batch or found.spec.max_batch_size
    one = _slice(columns, 0, 1)
    large = _slice(columns, 0, batch)
    measured: dict[str, dict[int, list[float]]] = {"batch1_p50_ms": {}, "large_pred_per_s": {}}
    for version in versions:
        measured["batch1_p50_ms"][version] = []
        measured["large_pred_per_s"][version] = []
        for _ in range(20):  # warm-up: graph tracing, interpreter allocation
            served[version].call(one, 1)
            served[version].call(large, batch)
    for round_ in range(args.rounds):
        order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
        for version in order:
            fn = served[version]
            times = []
            for _ in range(300):
                started = time.perf_counter()
                fn.call(one, 1)
                times.append(time.perf_counter() - started)
            measured["batch1_p50_ms"][version].append(statistics.median(times) * 1000)
            started, calls = time.perf_counter(), 0
            while time.perf_counter() - started < 1.0:
                fn.call(large, batch)
                calls += 1
            measured["large_pred_per_s"][version].append(calls * batch / (time.perf_counter() - started))
        b1, big = measured["batch1_p50_ms"], measured["large_pred_per_s"]
        print(
            f"in-process round {round_ + 1}: "
            + ", ".join(f"v{v} {b1[v][-1]:.3f} ms / {big[v][-1]:,.0f} pred/s" for v in versions),
            flush=True,
        )
    return measured, batch


def _slice(columns: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``start:stop`` of the columns, repeated when the data has fewer rows than asked."""
    import numpy as np

    out = {}
    for name, column in columns.items():
        n = len(column)
        index = np.arange(start, stop) % n
        out[name] = column[index]
    return out


def _served(
    function: str, versions: dict[int, dict[str, Any]], args: argparse.Namespace
) -> dict[int, list[float]]:
    """Predictions/s through `fn serve` at 64 images per request, one server per version."""
    scenario = sc.SCENARIOS["tagger-b64"]
    request = fnserve_requests(scenario)[SERVED_FORMAT]
    measured: dict[int, list[float]] = {v: [] for v in versions}
    with contextlib.ExitStack() as stack:
        servers = {v: stack.enter_context(_server(function, v, request)) for v in versions}
        for round_ in range(args.rounds):
            order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
            for version in order:
                folder = WORK / "optimize" / "wrk"
                run_wrk(servers[version].url, request, scenario.concurrency, 1.0, folder)
                result = run_wrk(servers[version].url, request, scenario.concurrency, args.seconds, folder)
                if result.errors:
                    raise SystemExit(
                        f"version {version}: {result.errors} errors; see {servers[version].log_path}"
                    )
                measured[version].append(result.rps * scenario.instances)
            print(
                f"served round {round_ + 1}: "
                + ", ".join(f"v{v} {measured[v][-1]:,.0f} pred/s" for v in versions),
                flush=True,
            )
    return measured


@contextlib.contextmanager
def _server(function: str, version: int, request: sc.Request) -> Iterator[Server]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "fnserve.cli",
        "serve",
        str(sc.ROOT / "functions" / function),
        "--port",
        str(port),
        "--checkpoint-version",
        str(version),
    ]
    env = {
        "FNSERVE_STORE": sc.STORE.as_uri(),
        "FNSERVE_CACHE": str(WORK / "optimize" / "cache"),
        "PYTHONPATH": str(sc.ROOT),
    }
    with Server(f"optimize-{function}-v{version}", argv, port, "/readyz", env=env, cwd=sc.ROOT) as server:
        status, body = probe(server.url, request)
        if status != 200:
            raise SystemExit(f"version {version}: the server answered {status}: {body[:300]!r}")
        yield server


def _ratio(values: dict[int, list[float]], version: int, base: int) -> float:
    return statistics.median(v / b for v, b in zip(values[version], values[base], strict=True))


def _report(function: str, results: dict[str, Any]) -> None:
    versions, in_process, served = results["versions"], results["in_process"], results["served"]
    base = min(versions)
    batch = results["batch"]
    metric = METRIC[function]
    header = (
        f"| version | technique | model bytes | vs float32 | {metric} | batch-1 p50 ms | vs float32 "
        f"| pred/s @{batch} | vs float32 |"
    )
    if served:
        header += " served pred/s @64/request | vs float32 |"
    print("\n" + header)
    print("|" + "|".join([" --- "] * (header.count("|") - 1)) + "|")
    for version, row in versions.items():
        b1 = in_process["batch1_p50_ms"][version]
        large = in_process["large_pred_per_s"][version]
        value = row["metric"]
        line = (
            f"| {version} | {row['technique']} | {row['bytes']:,} "
            f"| {row['bytes'] / versions[base]['bytes']:.2f}x | "
            f"{'-' if value is None else f'{value:.4f}'} | {statistics.median(b1):.3f} | "
            f"{_ratio(in_process['batch1_p50_ms'], version, base):.2f}x | {statistics.median(large):,.0f} | "
            f"{_ratio(in_process['large_pred_per_s'], version, base):.2f}x |"
        )
        if served:
            line += f" {statistics.median(served[version]):,.0f} | {_ratio(served, version, base):.2f}x |"
        print(line)


if __name__ == "__main__":
    main()

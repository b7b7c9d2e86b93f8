"""What watching the model costs: the same function served with monitoring off, monitoring on
(default windows), and monitoring on with payload capture at 100%, side by side in one run.

Each variant is `fn serve` of a copy of the example function's folder whose `function.toml`
differs only in its `[monitor]` section, over this project's checkpoint store (so every variant
loads the very same version), pinned to core 0; wrk (one thread, keep-alive, closed loop) on
core 1. All variants' servers run at once (idle but one) and are measured in turn, in short
windows: the variants alternate within every round (this machine's speed drifts over minutes), and
the verdict is the median over the rounds of each round's ratio to "off" (measured in the same
round, seconds apart), next to the best window of each.

    .venv/bin/python benchmarks/monitor_cost.py                    # recs c64 and tagger 64 images/request
    .venv/bin/python benchmarks/monitor_cost.py --rounds 3 --seconds 5

Targets (issue 11): monitoring on costs at most 5% of throughput on recs at concurrency 64 and at
most 3% on tagger with 64 images per request; capture at 100% at most 15% on recs c64.
Results are printed and written to .bench/results/monitor-cost-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios as sc
from harness import WORK, Server, free_port, probe, run_wrk
from targets import fnserve_requests

VARIANTS = {
    "off": "[monitor]\nenabled = false\n",
    "on": "[monitor]\nenabled = true\n",
    "on + capture 100%": "[monitor]\nenabled = true\ncapture_rate = 1.0\n",
}
CASES = {  # scenario, request format, variants measured, the most each may cost vs off
    "recs-c64": ("GET query", {"on": 0.05, "on + capture 100%": 0.15}),
    "tagger-b64": ("Arrow photo column", {"on": 0.03}),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds; each measures every variant once")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measuring window")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or args.rounds < 1:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}; --rounds >= 1")
    results: dict[str, dict[str, list[float]]] = {}
    for case in cases:
        scenario = sc.SCENARIOS[case]
        sc.checkpoint(scenario.function)  # fail early, naming `fn train --missing`
        request_format, costs = CASES[case]
        request = fnserve_requests(scenario)[request_format]
        variants = ["off", *costs]
        projects = {v: _project(scenario.function, v) for v in variants}
        measured: dict[str, list[float]] = {v: [] for v in variants}
        with contextlib.ExitStack() as stack:  # every variant's server up at once, measured in turn
            servers = {v: stack.enter_context(_server(projects[v], v, request)) for v in variants}
            for round_ in range(args.rounds):
                order = variants if round_ % 2 == 0 else list(reversed(variants))
                for variant in order:
                    rps = _measure(servers[variant], request, scenario.concurrency, args)
                    measured[variant].append(rps)
                    print(f"{case} round {round_ + 1} {variant:18} {rps:10,.0f} req/s", flush=True)
        results[case] = measured
    _report(results)
    out = WORK / "results" / f"monitor-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out.relative_to(sc.ROOT)}")


def _project(function: str, variant: str) -> Path:
    """A scratch project holding a copy of ``functions/<function>`` with this variant's [monitor]."""
    project = WORK / "monitor-cost" / variant.replace(" ", "-").replace("%", "pct").replace("+", "")
    folder = project / "functions" / function
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(sc.ROOT / "functions" / function, folder, ignore=shutil.ignore_patterns("__pycache__"))
    toml = folder / "function.toml"
    kept = toml.read_text() if toml.exists() else ""
    if "[monitor]" in kept:
        kept = kept.split("[monitor]", 1)[0]  # the example's own [monitor] gives way to the variant's
    toml.write_text(kept.rstrip() + "\n\n" + VARIANTS[variant])
    return project


@contextlib.contextmanager
def _server(project: Path, variant: str, request: sc.Request) -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "fnserve.cli", "serve", "--port", str(port)]
    env = {
        "FNSERVE_STORE": sc.STORE.as_uri(),
        "FNSERVE_CACHE": str(WORK / "monitor-cost" / "cache"),
        "FNSERVE_RELOAD_INTERVAL_S": "3600",
        "PYTHONPATH": str(sc.ROOT),
    }
    name = "monitor-cost-" + project.name
    with Server(name, argv, port, "/readyz", env=env, cwd=project) as server:
        status, body = probe(server.url, request)
        if status != 200:
            raise SystemExit(
                f"{variant}: the server answered {status}: {body[:300]!r}; see {server.log_path}"
            )
        yield server


def _measure(server: Server, request: sc.Request, concurrency: int, args: argparse.Namespace) -> float:
    folder = WORK / "monitor-cost" / "wrk"
    run_wrk(server.url, request, concurrency, args.warmup, folder)
    result = run_wrk(server.url, request, concurrency, args.seconds, folder)
    if result.errors:
        raise SystemExit(f"{result.errors} errors under load; see {server.log_path}")
    return result.rps


def _report(results: dict[str, dict[str, list[float]]]) -> None:
    """Per variant: the best window, and the median of its per-round ratios to "off" (the two
    measured minutes apart at most, so drift between rounds cancels); the verdict uses the median."""
    print(
        "\n| case | variant | req/s (best) | best vs best off | median of round ratios | allowed | verdict |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for case, measured in results.items():
        off = measured["off"]
        print(f"| {case} | off | {max(off):,.0f} | 1.00x | 1.00x | | |")
        for variant, allowed in CASES[case][1].items():
            ratios = [v / o for v, o in zip(measured[variant], off, strict=True)]
            median = statistics.median(ratios)
            verdict = "PASS" if median >= 1 - allowed else "FAIL"
            best = max(measured[variant])
            print(
                f"| {case} | {variant} | {best:,.0f} | {best / max(off):.2f}x"
                f" | {median:.2f}x | {allowed:.0%} | {verdict} |"
            )


if __name__ == "__main__":
    main()

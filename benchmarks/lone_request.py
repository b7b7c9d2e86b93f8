"""A lone request's path (concurrency 1) and the batching under load (concurrency 64) for recs, with
the lone-call path on and off, next to the protocol and model limits, side by side in one run.

Servers, all up at once and pinned to core 0 (an idle one costs nothing): the protocol limit
(``limits.py protocol-server``: fnserve's HTTP stack answering a constant), the same with
predictions through Starlette's router (``--router``: the stack the issue's "today 0.75x" was
measured on, before fnserve's predictions left the router), and ``python -m
fnserve.runtime functions/recs`` (checkpoint v1) twice: ``[serve] lone_call_max_ms = 1`` (the
default: a lone request's short model call runs on the event loop's own turn) and ``= 0`` (every
call handed to the model thread, as before). wrk (one thread, keep-alive) on core 1 sends one GET
per prediction; each round measures every server at c=1 and c=64 (``--seconds`` each, after a
warm-up), and the model limit (the function's model called in-process at batch 1, ``limits.py``'s
loop) is measured between rounds, so drift hits everything alike. Figures: the best round of each;
ratios: the median of the rounds' own ratios.

    .venv/bin/python benchmarks/lone_request.py                 # 3 rounds of 5 s
    .venv/bin/python benchmarks/lone_request.py --rounds 2 --seconds 3

Targets (issue 14): c=1 p50 <= protocol p50 + model batch-1 p50 + 0.15 ms; c=64 >= 0.8x the
protocol limit's requests/s with p99 no worse than with the lone path off; c=64 is also shown
against the router's stack.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway import ROOT, free_port, wrk  # noqa: E402

QUERY = "user_country=NL&user_language=nl&day_of_week=5&season=winter&hotel_price=129.0&hotel_id=4711"
SERVER_CORE = "0"
MODEL_LOOP = """
import json, sys
sys.path.insert(0, sys.argv[1])
import limits, scenarios
from peers.recs_model import RecsModel
recs = RecsModel(scenarios.checkpoint("recs"))
columns = scenarios.recs_columns(scenarios.recs_rows(1, seed=1))
print(json.dumps(limits.timed_loop(lambda: recs(columns), float(sys.argv[2]), 3)))
"""


def start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (logs / f"{name}.log").open("wb")
    command = ["taskset", "-c", SERVER_CORE, sys.executable, *argv, "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited; see {logs / f'{name}.log'}")
        try:
            if (
                httpx.get(
                    f"{url}/healthz" if name.startswith("protocol") else f"{url}/readyz", timeout=1
                ).status_code
                == 200
            ):
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become ready; see {logs / f'{name}.log'}")


def model_p50_ms(seconds: float) -> float:
    argv = ["taskset", "-c", SERVER_CORE, sys.executable, "-c", MODEL_LOOP, str(HERE), str(seconds)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
    return float(json.loads(out.strip().splitlines()[-1])["p50_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--checkpoint", default="1", help="recs checkpoint version (default 1)")
    args = parser.parse_args()
    logs = ROOT / ".bench" / "lone-request"
    logs.mkdir(parents=True, exist_ok=True)
    from fnserve.project import ProjectSettings

    project = ProjectSettings.load(ROOT, os.environ)
    env = {**os.environ, "FNSERVE_STORE": project.store, "FNSERVE_CACHE": str(project.cache_dir)}
    env.update(FNSERVE_CHECKPOINT_VERSION=args.checkpoint, TF_CPP_MIN_LOG_LEVEL="2")
    runtime = ["-m", "fnserve.runtime", "functions/recs"]
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for name, argv, extra in (
            ("protocol", [str(HERE / "limits.py"), "protocol-server"], {}),
            ("protocol router", [str(HERE / "limits.py"), "protocol-server", "--router"], {}),
            ("lone on", runtime, {"FNSERVE_LONE_CALL_MAX_MS": "1"}),
            ("lone off", runtime, {"FNSERVE_LONE_CALL_MAX_MS": "0"}),
        ):
            proc, urls[name] = start(name.replace(" ", "-"), argv, {**env, **extra}, logs)
            procs.append(proc)
        paths = {name: f"{url}/function/recs?{QUERY}" for name, url in urls.items()}
        for url in paths.values():
            wrk(url, 8, 2)  # warm-up: connections, the model's first calls, the cost model
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            measured: dict[str, Any] = {"model_p50_ms": model_p50_ms(2.0), "seconds": args.seconds}
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for name in order:
                measured[f"{name} c1"] = wrk(paths[name], 1, args.seconds)
                before = _inline_calls(urls[name]) if not name.startswith("protocol") else 0.0
                measured[f"{name} c64"] = wrk(paths[name], 64, args.seconds)
                if not name.startswith("protocol"):  # how many requests under load took the lone path
                    measured[f"{name} c64"]["lone_calls"] = _inline_calls(urls[name]) - before
            rounds.append(measured)
            print(
                f"round {r + 1}: "
                + ", ".join(
                    f"{k} {v['p50_ms']:.3f} ms / {v['rps']:,.0f} req/s"
                    for k, v in measured.items()
                    if isinstance(v, dict)
                )
                + f", model@1 {measured['model_p50_ms']:.3f} ms",
                flush=True,
            )
        inline = [int(_inline_calls(urls["lone on"])), int(_inline_calls(urls["lone off"]))]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    summary = report(rounds, inline)
    out = ROOT / ".bench" / "results" / f"lone-request-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=2))
    print(f"\nraw results: {out.relative_to(ROOT)}")


def _inline_calls(url: str) -> float:
    """Calls answered on the loop's own turn, from the server's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = [line for line in text.splitlines() if line.startswith("fnserve_lone_calls_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in found)


def report(rounds: list[dict[str, Any]], inline: list[int]) -> dict[str, Any]:
    def best(key: str, c1: bool) -> dict[str, float]:
        runs = [r[key] for r in rounds]
        return min(runs, key=lambda x: x["p50_ms"]) if c1 else max(runs, key=lambda x: x["rps"])

    print(
        f"\nrecs, one GET per prediction, best of {len(rounds)} rounds (servers on core 0, wrk on core 1)\n"
    )
    print(f"{'':18}{'c1 p50 ms':>10}{'c1 p99':>8}{'c64 req/s':>11}{'c64 p99 ms':>11}")
    for name in ("protocol", "protocol router", "lone on", "lone off"):
        a, b = best(f"{name} c1", True), best(f"{name} c64", False)
        print(f"{name:18}{a['p50_ms']:>10.3f}{a['p99_ms']:>8.2f}{b['rps']:>11,.0f}{b['p99_ms']:>11.2f}")
    model = min(r["model_p50_ms"] for r in rounds)
    print(f"{'model limit @1':18}{model:>10.3f}")
    budgets = [r["protocol c1"]["p50_ms"] + r["model_p50_ms"] + 0.15 for r in rounds]
    margins = [r["lone on c1"]["p50_ms"] - b for r, b in zip(rounds, budgets, strict=True)]
    c1_ratio = statistics.median(r["lone on c1"]["p50_ms"] / r["lone off c1"]["p50_ms"] for r in rounds)
    c64 = statistics.median(r["lone on c64"]["rps"] / r["protocol c64"]["rps"] for r in rounds)
    c64_off = statistics.median(r["lone off c64"]["rps"] / r["protocol c64"]["rps"] for r in rounds)
    p99 = statistics.median(r["lone on c64"]["p99_ms"] / r["lone off c64"]["p99_ms"] for r in rounds)
    margin = statistics.median(margins)
    print(f"\nlone calls on the loop: {inline[0]:,} (on), {inline[1]:,} (off)")
    at_c64 = sum(r["lone on c64"].get("lone_calls", 0) for r in rounds)
    total_c64 = sum(r["lone on c64"]["rps"] * r.get("seconds", 0) for r in rounds)
    print(f"... of which at c=64: {at_c64:,.0f}" + (f" of ~{total_c64:,.0f} requests" if total_c64 else ""))
    print(
        f"c1 p50 vs protocol p50 + model@1 p50 + 0.15 ms: {margin:+.3f} ms (median of rounds; "
        f"target <= 0): {'PASS' if margin <= 0 else 'FAIL'}; lone on vs off {c1_ratio:.2f}x"
    )
    verdict = "PASS" if c64 >= 0.8 else "FAIL"
    print(f"c64 vs protocol limit: {c64:.2f}x on, {c64_off:.2f}x off (target >= 0.8x): {verdict}")
    routed = statistics.median(r["lone on c64"]["rps"] / r["protocol router c64"]["rps"] for r in rounds)
    router = statistics.median(r["protocol c64"]["rps"] / r["protocol router c64"]["rps"] for r in rounds)
    print(
        f"c64 vs the protocol limit through Starlette's router (the issue's old stack): {routed:.2f}x on "
        f"({'PASS' if routed >= 0.8 else 'FAIL'}); the protocol limit itself is {router:.2f}x that stack"
    )
    print(f"c64 p99, on vs off: {p99:.2f}x (target <= 1 beyond noise)")
    return {
        "c1_margin_ms": margin,
        "c1_on_vs_off": c1_ratio,
        "c64_vs_protocol": c64,
        "c64_off_vs_protocol": c64_off,
        "c64_p99_on_vs_off": p99,
        "c64_vs_protocol_router": routed,
        "protocol_vs_protocol_router": router,
        "lone_calls": inline,
    }


if __name__ == "__main__":
    main()

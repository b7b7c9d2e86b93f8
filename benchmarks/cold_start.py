"""What the runtime's own entry point saves at a cold start: ``python -m fnserve.runtime FOLDER``
(what images and local replicas run) against ``python -m fnserve.cli serve FOLDER`` (what they
ran before), side by side in one run.

For each function and entry point it measures, over several starts with the two entry points
alternating (this machine's speed drifts over minutes; alternation lets drift hit both alike):

- ``ready``: from spawning the process until its ``/readyz`` answers 200 (interpreter, imports,
  checkpoint fetch from the local store, model load) — what a replica's cold start costs;
- ``first answer``: until the first prediction after that has come back;
- ``modules``: how many modules the process holds once it serves (all, and fnserve's own), read
  by a probe thread inside the same process;
- ``import``: importing the entry point alone, without the function (``python -c "import M"``).

Each process is pinned to core 0 (taskset, where present). Checkpoints come from this project's
store (``fn train --missing`` runs first, so a fresh clone trains them once).

    .venv/bin/python benchmarks/cold_start.py                        # recs and tagger, 7 starts each
    .venv/bin/python benchmarks/cold_start.py --functions recs --starts 3

Prints a table of p50 and max per entry point and the runtime's saving as a ratio; writes the
figures to .bench/results/cold-start-<time>.json.
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

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = {
    "runtime": ["-m", "fnserve.runtime"],  # images and local replicas now
    "cli": ["-m", "fnserve.cli", "serve"],  # what they ran before
}
IMPORTS = {"runtime": "fnserve.runtime.main", "cli": "fnserve.cli.main"}
QUERIES = {
    "recs": "/function/recs?user_country=NL&user_language=nl&day_of_week=5&season=winter"
    "&hotel_price=129.0&hotel_id=4711",
    "tagger": None,  # POSTed: a small JPEG (see _tagger_request)
}
# Runs an entry point as `-m` does; once it serves, a thread writes the modules it holds.
PROBE = """
import json, runpy, sys, threading, time, urllib.request
out, url_file, entry = sys.argv[1], sys.argv[2], sys.argv[3:]
def report():
    while True:
        try:
            url = open(url_file).read().strip()
            if url and urllib.request.urlopen(url + "/readyz", timeout=1).status == 200:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    mods = sorted(sys.modules)
    json.dump({"all": len(mods), "fnserve": len([m for m in mods if m.split(".")[0] == "fnserve"])},
              open(out, "w"))
threading.Thread(target=report, daemon=True).start()
module, *args = entry[1:] if entry[0] == "-m" else entry
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--functions", default="recs,tagger", help="comma-separated example functions")
    parser.add_argument("--starts", type=int, default=7, help="cold starts per function and entry point")
    args = parser.parse_args()
    if args.starts < 1:
        parser.error("--starts must be at least 1")
    functions = [name.strip() for name in args.functions.split(",") if name.strip()]
    unknown = [name for name in functions if name not in QUERIES]
    if unknown:
        parser.error(f"unknown function(s) {', '.join(unknown)}; choose from {', '.join(QUERIES)}")
    _train_missing(functions)
    results: dict[str, Any] = {"imports": _imports(rounds=args.starts), "functions": {}}
    for name in functions:
        runs: dict[str, list[dict[str, float]]] = {entry: [] for entry in ENTRY_POINTS}
        for round_ in range(args.starts):
            order = list(ENTRY_POINTS) if round_ % 2 == 0 else list(reversed(ENTRY_POINTS))
            for entry in order:
                runs[entry].append(_cold_start(name, entry))
        results["functions"][name] = runs
    _print(results)
    out = ROOT / ".bench" / "results" / f"cold-start-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")


def _pin() -> list[str]:
    return ["taskset", "-c", "0"] if shutil.which("taskset") else []


def _train_missing(functions: list[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "fnserve.cli", "train", "--missing", *functions], cwd=ROOT, check=True
    )


def _imports(rounds: int) -> dict[str, list[float]]:
    """Seconds to import each entry point's module alone, alternating."""
    times: dict[str, list[float]] = {entry: [] for entry in IMPORTS}
    for round_ in range(rounds):
        order = list(IMPORTS) if round_ % 2 == 0 else list(reversed(IMPORTS))
        for entry in order:
            started = time.perf_counter()
            subprocess.run([*_pin(), sys.executable, "-c", f"import {IMPORTS[entry]}"], cwd=ROOT, check=True)
            times[entry].append(time.perf_counter() - started)
    return times


def _cold_start(name: str, entry: str) -> dict[str, float]:
    """One start of ``functions/NAME`` through ``entry``: seconds to ready and to the first answer."""
    with tempfile.TemporaryDirectory(prefix="fnserve-cold-") as scratch:
        url_file, modules_file = Path(scratch) / "url", Path(scratch) / "modules.json"
        address_file = Path(scratch) / "address.json"
        command = [*_pin(), sys.executable, "-c", PROBE, str(modules_file), str(url_file)]
        command += [*ENTRY_POINTS[entry], str(ROOT / "functions" / name), "--port", "0"]
        if entry == "runtime":
            command += ["--address-file", str(address_file)]
        log = open(Path(scratch) / "log", "w+b")  # noqa: SIM115 - read after the process ends
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = _wait_url(proc, entry, address_file, log)
            url_file.write_text(url)
            with httpx.Client(timeout=5) as client:
                _wait_ready(client, url, proc, log)
                ready = time.perf_counter() - started
                answer = _predict(client, url, name)
                first = time.perf_counter() - started
            assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 10
            while not modules_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            modules = json.loads(modules_file.read_text())
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    return {
        "ready_s": ready,
        "first_answer_s": first,
        "modules": modules["all"],
        "fnserve_modules": modules["fnserve"],
    }


def _wait_url(proc: subprocess.Popen[bytes], entry: str, address_file: Path, log: Any) -> str:
    """Where the process listens: its address file (runtime) or its console line (cli)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _check_alive(proc, log)
        if entry == "runtime":
            try:
                return str(json.loads(address_file.read_text())["url"])
            except (OSError, ValueError, KeyError):
                pass
        else:
            log.seek(0)
            for line in log.read().decode(errors="replace").splitlines():
                if "listening on " in line:
                    return line.rsplit("listening on ", 1)[1].strip()
        time.sleep(0.002)
    raise SystemExit(f"{entry}: no address within 120 s")


def _wait_ready(client: httpx.Client, url: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    """Poll ``/readyz`` every 5 ms until it answers 200 (the process exiting meanwhile: an error)."""
    while True:
        try:
            if client.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        _check_alive(proc, log)
        time.sleep(0.005)


def _check_alive(proc: subprocess.Popen[bytes], log: Any) -> None:
    if proc.poll() is not None:
        log.seek(0)
        raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read().decode(errors='replace')}")


def _predict(client: httpx.Client, url: str, name: str) -> httpx.Response:
    query = QUERIES[name]
    if query is not None:
        return client.get(url + query)
    headers = {"Content-Type": "image/jpeg"}
    return client.post(f"{url}/function/tagger", content=_tagger_request(), headers=headers)


def _tagger_request() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _print(results: dict[str, Any]) -> None:
    def p50(values: list[float]) -> float:
        return statistics.median(values)

    imports = results["imports"]
    print("\nimport of the entry point alone (s): p50 / max")
    for entry, values in imports.items():
        print(f"  {entry:8} {p50(values):.3f} / {max(values):.3f}")
    saved = p50(imports["cli"]) - p50(imports["runtime"])
    ratio = p50(imports["runtime"]) / p50(imports["cli"])
    print(f"  runtime saves {saved * 1000:.0f} ms ({ratio:.2f}x the cli's)")
    for name, runs in results["functions"].items():
        starts = len(runs["runtime"])
        print(f"\n{name}: cold start to ready and to the first answer (s), p50 / max over {starts}")
        print(f"  {'entry':8} {'ready':>15} {'first answer':>15} {'modules':>8} {'fnserve':>8}")
        for entry, starts in runs.items():
            ready = [s["ready_s"] for s in starts]
            first = [s["first_answer_s"] for s in starts]
            print(
                f"  {entry:8} {p50(ready):7.3f} / {max(ready):5.3f} {p50(first):7.3f} / {max(first):5.3f}"
                f" {starts[0]['modules']:8} {starts[0]['fnserve_modules']:8}"
            )
        ready_cli = p50([s["ready_s"] for s in runs["cli"]])
        ready_runtime = p50([s["ready_s"] for s in runs["runtime"]])
        print(
            f"  runtime saves {(ready_cli - ready_runtime) * 1000:.0f} ms to ready "
            f"({ready_runtime / ready_cli:.2f}x the cli's)"
        )


if __name__ == "__main__":
    main()

"""What a model call costs fnserve: the SavedModel signature called the public way
(``signature(**tensors)``, what the model limit and every peer's TensorFlow runtime do) and the
direct way fnserve calls it (``fnserve.runtime.tf_direct``: the inference function executed by
name), side by side in one run, on the same loaded model and the same arrays.

For recs (the function's model, its ids as predict.py makes them) at batch 1, 23 (the average
batch at concurrency 64 in ``lone_request.py``), 256 and 1024 (``fn batch``'s), and the tagger at 1
and 64 decoded photos, each way is timed in short windows that alternate within every round,
pinned to core 0 (this machine's speed drifts over minutes); figures are the p50 of a call in the
best window, ratios the median of the rounds' own. Before timing, each case checks that both ways
give the same outputs, bit for bit.

    .venv/bin/python benchmarks/model_call.py                  # 5 rounds of 1 s windows
    .venv/bin/python benchmarks/model_call.py --rounds 3 --seconds 0.5

Writes the figures to .bench/results/model-call-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenarios  # noqa: E402
from peers.recs_model import RecsModel  # noqa: E402

from fnserve import load_model  # noqa: E402
from fnserve.runtime.tf_direct import DirectCall  # noqa: E402

WORK = scenarios.ROOT / ".bench"


def cases() -> dict[str, tuple[Any, dict[str, np.ndarray]]]:
    """``{"recs@1": (model, checked arrays), ...}``: fnserve's loaded model and its exact inputs."""
    found = {}
    recs_folder = scenarios.checkpoint("recs")
    recs, ids = load_model(recs_folder), RecsModel(recs_folder)
    for batch in (1, 23, 256, 1024):
        columns = scenarios.recs_columns(scenarios.recs_rows(batch, seed=batch))
        arrays = dict(ids.ids(columns), hotel_price=np.asarray(columns["hotel_price"], np.float32))
        found[f"recs@{batch}"] = (recs, recs._check(arrays))
    tagger = load_model(scenarios.checkpoint("tagger"))
    for batch in (1, 64):
        photos = scenarios.decoded(scenarios.photos(batch, seed=batch))
        found[f"tagger@{batch}"] = (tagger, tagger._check({"photo": photos}))
    return found


def window(call: Callable[[], object], seconds: float) -> float:
    """The p50 of ``call`` in µs over ``seconds``, after a few warm calls."""
    for _ in range(20):
        call()
    durations = []
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        call()
        durations.append(time.perf_counter() - now)
    return statistics.median(durations) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per window")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    measured: dict[str, dict[str, list[float]]] = {}
    found = cases()
    for case, (model, arrays) in found.items():
        if not isinstance(model._call, DirectCall):
            raise SystemExit(f"{case}: fnserve calls this model the public way; nothing to compare")
        direct, public = model._call(arrays), model._public(arrays)
        if set(direct) != set(public) or any(not np.array_equal(direct[k], public[k]) for k in direct):
            raise SystemExit(f"{case}: the direct call's outputs differ from the public call's")
    for round_ in range(args.rounds):
        for case, (model, arrays) in found.items():
            ways = [("public", model._public), ("direct", model._call)]
            for name, way in ways if round_ % 2 == 0 else ways[::-1]:
                p50 = window(lambda way=way, arrays=arrays: way(arrays), args.seconds)
                measured.setdefault(case, {}).setdefault(name, []).append(p50)
        print(f"round {round_ + 1} of {args.rounds} done", flush=True)
    report(measured)
    out = WORK / "results" / f"model-call-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(measured, indent=2))
    print(f"\nraw results: {out.relative_to(scenarios.ROOT)}")


def report(measured: dict[str, dict[str, list[float]]]) -> None:
    print("\nmodel call p50 (µs, best window of each), pinned to core 0\n")
    print(f"{'case':12} {'public':>9} {'direct':>9} {'saved':>8} {'direct / public':>16}")
    for case, ways in measured.items():
        public, direct = min(ways["public"]), min(ways["direct"])
        ratio = statistics.median(d / p for d, p in zip(ways["direct"], ways["public"], strict=True))
        print(f"{case:12} {public:9.1f} {direct:9.1f} {public - direct:8.1f} {ratio:15.2f}x")


if __name__ == "__main__":
    main()

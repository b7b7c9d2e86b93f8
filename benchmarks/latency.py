"""Latency of one prediction per request, as served locally by `fn serve`.

Starts `fn serve` on a free loopback port with the example functions (train them first:
`fn train --missing`), then sends sequential requests over one keep-alive connection
(concurrency 1) and prints p50/p90/p99 per function, next to the in-process model call
for the same single instance so the HTTP + decoding overhead is visible as a ratio.

    .venv/bin/python benchmarks/latency.py --requests 500
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RECS_QUERY = {
    "user_country": "NL",
    "user_language": "nl",
    "day_of_week": 5,
    "season": "winter",
    "hotel_price": 129.0,
    "hotel_id": 4711,
}


def percentiles(samples_s: list[float]) -> tuple[float, float, float]:
    ms = sorted(s * 1000 for s in samples_s)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return statistics.median(ms), pick(0.90), pick(0.99)


def timed(call: Callable[[], object], n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def start_server() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fnserve.cli", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    url, ready = None, 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and ready < 2:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"listening on (http://\S+)", line):
            url = m.group(1)
        if "ready" in line and "/function/" in line:
            ready += 1
    if url is None or ready < 2:
        proc.kill()
        raise SystemExit("fn serve did not become ready; did you run `fn train --missing`?")
    return proc, url


def sample_photo() -> bytes:
    sys.path.insert(0, str(ROOT / "functions" / "tagger"))
    from PIL import Image
    from train import render_scene  # type: ignore[import-not-found]

    buf = io.BytesIO()
    Image.fromarray(render_scene({"sea_view", "balcony", "outside"}, np.random.default_rng(1))).save(
        buf, "JPEG"
    )
    return buf.getvalue()


def in_process(n: int, photo: bytes) -> dict[str, list[float]]:
    """The same single-instance call without HTTP: the model limit at batch 1."""
    from fnserve.runtime import codec
    from fnserve.runtime.function import ServedFunction
    from fnserve.runtime.loader import discover
    from fnserve.runtime.settings import Settings
    from fnserve.runtime.store import CheckpointStore

    settings = Settings.load(ROOT, os.environ)
    store = CheckpointStore(settings.store, cache_dir=settings.cache_dir)
    out = {}
    for found in discover([ROOT / "functions"]):
        fn = ServedFunction(found, store)
        fn.load()
        if fn.name == "recs":
            instance = codec.validate_instance(fn.schema, RECS_QUERY)
        else:
            field = fn.schema.inputs[0]
            instance = {field.name: codec.decode_image(field, photo, field.name)}
        out[fn.name] = timed(lambda fn=fn, i=instance: fn.call(codec.to_columns(fn.schema, [i]), 1), n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    photo = sample_photo()
    proc, url = start_server()
    try:
        with httpx.Client(base_url=url) as client:
            served = {
                "recs": timed(
                    lambda: client.get("/function/recs", params=RECS_QUERY).raise_for_status(), args.requests
                ),
                "tagger": timed(
                    lambda: client.post(
                        "/function/tagger", content=photo, headers={"content-type": "image/jpeg"}
                    ).raise_for_status(),
                    args.requests,
                ),
            }
    finally:
        proc.terminate()
        proc.wait(30)
    raw = in_process(args.requests, photo)
    print(f"{'function':<8} {'path':<28} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for name in ("recs", "tagger"):
        for label, samples in (
            (f"fn serve, {'GET query' if name == 'recs' else 'POST jpeg'}", served[name]),
            ("in-process call, batch 1", raw[name]),
        ):
            p50, p90, p99 = percentiles(samples)
            print(f"{name:<8} {label:<28} {p50:8.2f} {p90:8.2f} {p99:8.2f}")
        overhead_ms = percentiles(served[name])[0] - percentiles(raw[name])[0]
        print(f"{name:<8} {'HTTP overhead at p50':<28} {overhead_ms:8.2f} ms")


if __name__ == "__main__":
    main()

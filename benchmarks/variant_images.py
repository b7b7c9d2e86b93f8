"""What a LiteRT version saves in the image: its size and its cold start beside the float32
SavedModel version's, side by side in one run.

For one function it builds two images with ``fn build NAME --bake-checkpoint V`` (the version
inside, so a start fetches nothing over the network): the base (a SavedModel: TensorFlow in the
image) and a variant that `fn optimize` published as a LiteRT flatbuffer (no TensorFlow: the
tensorflow template's ``[formats.litert]``). Then, alternating the two images over several starts
(this machine's speed drifts over minutes), it measures from ``docker run`` until the first
prediction has come back: the container's start, Python, the runtime's imports (TensorFlow's or
only the LiteRT interpreter's), the model load and the first call. The replica's own
``/functions`` says how much of it was the checkpoint fetch and the model load.

    .venv/bin/python benchmarks/variant_images.py                       # recs, newest of each format
    .venv/bin/python benchmarks/variant_images.py --function tagger --starts 5
    .venv/bin/python benchmarks/variant_images.py --base 3 --variant 5

Needs the Docker engine (scripts/ensure-docker) and a published LiteRT version
(``fn optimize recs --quantize dynamic``). Prints a table; writes the figures to
.bench/results/variant-images-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios as sc
from harness import WORK, free_port

from fnserve.images.builds import build_image, prepare_build
from fnserve.images.plan import CONTAINER_PORT
from fnserve.project import ProjectSettings
from fnserve.runtime.store import CheckpointStore

FIRST_REQUEST = {
    "recs": ("GET", sc.query_path("/function/recs", sc.recs_rows(1, seed=3)[0])),
    "tagger": ("POST", "/function/tagger"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--function", default="recs", choices=sorted(FIRST_REQUEST))
    parser.add_argument("--base", type=int, help="the float32 version (default: the newest SavedModel one)")
    parser.add_argument("--variant", type=int, help="the LiteRT version (default: the newest LiteRT one)")
    parser.add_argument("--starts", type=int, default=5, help="cold starts of each image")
    args = parser.parse_args()
    settings = ProjectSettings.load(sc.ROOT)
    store = CheckpointStore(
        settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
    )
    base = args.base or _newest(store, args.function, "savedmodel")
    variant = args.variant or _newest(store, args.function, "litert")

    from fnserve.docker_engine import DockerEngine

    engine = DockerEngine.connect()
    images: dict[str, dict[str, Any]] = {}
    for label, version in (("float32 SavedModel", base), ("LiteRT", variant)):
        plan = prepare_build(settings, args.function, engine, bake=str(version), on_output=lambda line: None)
        built = build_image(plan, engine)
        images[label] = {
            "version": version,
            "image": plan.image,
            "format": plan.labels.get("io.fnserve.model-format"),
            "size_bytes": built.image.size_bytes,
            "starts": [],
        }
        print(f"{label}: version {version}, {plan.image}, {built.image.size_bytes / 1e6:,.0f} MB", flush=True)
    engine.close()

    for start in range(args.starts):
        order = list(images) if start % 2 == 0 else list(reversed(images))
        for label in order:
            measured = _cold_start(images[label]["image"], args.function)
            images[label]["starts"].append(measured)
            print(
                f"start {start + 1} {label:20} first answer {measured['first_answer_s']:.2f} s "
                f"(fetch {measured['fetch_s']:.2f} s, model load {measured['model_load_s']:.2f} s)",
                flush=True,
            )
    _report(args.function, images)
    out = WORK / "results" / f"variant-images-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(images, indent=2))
    print(f"\nwritten to {out.relative_to(sc.ROOT)}")


def _newest(store: CheckpointStore, function: str, model_format: str) -> int:
    """The newest published version whose model descriptor names ``model_format``."""
    for version in reversed(store.versions(function)):
        checkpoint = store.fetch(function, version)
        descriptor = checkpoint.path / "fnserve-model.json"
        found = json.loads(descriptor.read_text()).get("format") if descriptor.exists() else "savedmodel"
        if found == model_format:
            return version
    raise SystemExit(
        f"no {model_format} version of {function!r} is published"
        + ("; run `fn optimize` first" if model_format == "litert" else "; run `fn train` first")
    )


def _cold_start(image: str, function: str) -> dict[str, float]:
    """``docker run`` of the image until its first prediction is answered; the container is removed."""
    port = free_port()
    started = time.perf_counter()
    container = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "-p",
            f"127.0.0.1:{port}:{CONTAINER_PORT}",
            image,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        method, path = FIRST_REQUEST[function]
        body = _photo() if method == "POST" else None
        headers = {"Content-Type": "image/jpeg"} if body else {}
        with httpx.Client(timeout=5) as client:
            while True:
                if time.perf_counter() - started > 120:
                    raise SystemExit(f"{image}: no answer within 120 s; `docker logs {container[:12]}`")
                try:
                    response = client.request(
                        method, f"http://127.0.0.1:{port}{path}", content=body, headers=headers
                    )
                except httpx.TransportError:
                    time.sleep(0.01)
                    continue
                if response.status_code == 200:
                    break
                if response.status_code not in (502, 503):
                    raise SystemExit(f"{image}: answered {response.status_code}: {response.text[:300]}")
                time.sleep(0.01)
            first_answer_s = time.perf_counter() - started
            described = client.get(f"http://127.0.0.1:{port}/functions").json()["functions"][0]
    finally:
        subprocess.run(["docker", "rm", "-f", container], check=False, capture_output=True)
    return {
        "first_answer_s": first_answer_s,
        "fetch_s": described.get("fetch_s") or 0.0,
        "model_load_s": described.get("model_load_s") or 0.0,
    }


def _photo() -> bytes:
    return sc.photos(1, seed=5)[0]


def _report(function: str, images: dict[str, dict[str, Any]]) -> None:
    base, variant = images["float32 SavedModel"], images["LiteRT"]
    print(f"\n| {function} image | version | size | first answer p50 | max | model load p50 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, entry in images.items():
        firsts = [s["first_answer_s"] for s in entry["starts"]]
        loads = [s["model_load_s"] for s in entry["starts"]]
        print(
            f"| {label} | {entry['version']} | {entry['size_bytes'] / 1e6:,.0f} MB | "
            f"{statistics.median(firsts):.2f} s | {max(firsts):.2f} s | {statistics.median(loads):.3f} s |"
        )
    size_ratio = variant["size_bytes"] / base["size_bytes"]
    start_ratio = statistics.median([s["first_answer_s"] for s in variant["starts"]]) / statistics.median(
        [s["first_answer_s"] for s in base["starts"]]
    )
    print(f"\nLiteRT vs float32: image size {size_ratio:.2f}x, first answer p50 {start_ratio:.2f}x")


if __name__ == "__main__":
    main()

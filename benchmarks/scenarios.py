"""The benchmark's workload, shared by every target: inputs, request bodies, scenarios.

Every target of a scenario serves the same model (the SavedModel that `fn train` published,
called through its ``serving_default`` signature) with the same inputs; only the request
format differs, each target getting its own native one. Requests cycle through a few variants
(different hotels, different photos) so that no target can answer from a cache.

    from scenarios import SCENARIOS, recs_rows
"""

from __future__ import annotations

import base64
import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / ".fnserve" / "store"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
RECS_COLUMNS = ("user_country", "user_language", "day_of_week", "season", "hotel_price", "hotel_id")
COUNTRIES = ("NL", "DE", "FR", "GB", "US", "ES", "IT", "BR")
LANGUAGES = ("nl", "de", "fr", "en", "en", "es", "it", "pt")
SEASONS = ("winter", "spring", "summer", "autumn")


@dataclass(frozen=True)
class Scenario:
    """One row group of the results table: a workload every target runs the same way."""

    key: str
    title: str
    function: str  # the model: recs or tagger
    instances: int  # predictions per request
    concurrency: int  # connections kept busy by the load generator


SCENARIOS = {
    s.key: s
    for s in (
        Scenario("recs-c64", "recs, 1 instance/request, concurrency 64", "recs", 1, 64),
        Scenario("recs-c1", "recs, 1 instance/request, concurrency 1", "recs", 1, 1),
        Scenario("recs-b256", "recs, 256 instances/request, concurrency 8", "recs", 256, 8),
        Scenario("tagger-b64", "tagger, 64 images/request, concurrency 4", "tagger", 64, 4),
    )
}


@dataclass(frozen=True)
class Request:
    """What the load generator sends: one of ``variants`` (path, body) per request, in turn."""

    method: str
    variants: tuple[tuple[str, bytes], ...]
    headers: dict[str, str] = field(default_factory=dict)


def checkpoint(function: str) -> Path:
    """The newest published version of a function: what `fn serve` loads, and what the peers and
    the limits load beside it. It must be a trained SavedModel: a variant made by `fn optimize` or
    `fn precompute` (a LiteRT flatbuffer, a table) is refused, naming it, not compared with peers
    that load something else (benchmarks/optimize.py and precompute.py measure those)."""
    versions = [p for p in (STORE / function).glob("*") if (p / "fnserve-manifest.json").exists()]
    if not versions:
        raise SystemExit(f"no published checkpoint for {function!r}: run `.venv/bin/fn train --missing`")
    from fnserve.cli.serve import version_line
    from fnserve.runtime.manifest import Manifest

    newest = max(versions, key=lambda p: int(p.name))
    manifest_path = newest / "fnserve-manifest.json"
    manifest = Manifest.parse(manifest_path.read_bytes(), where=str(manifest_path))
    if manifest.metadata.get("lineage") or not (newest / "saved_model.pb").exists():
        raise SystemExit(
            f"{function} {version_line(manifest.version, manifest.metadata)} is not a trained "
            f"SavedModel: `fn serve` would serve it while the peers load a SavedModel. Publish a "
            f"trained version on top (`.venv/bin/fn train {function}`) or point fn.toml's store "
            f"elsewhere, then run again."
        )
    return newest


def recs_rows(n: int, seed: int) -> list[dict[str, object]]:
    """``n`` plausible recs instances, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        c = int(rng.integers(len(COUNTRIES)))
        rows.append(
            {
                "user_country": COUNTRIES[c],
                "user_language": LANGUAGES[c],
                "day_of_week": int(rng.integers(1, 8)),
                "season": SEASONS[int(rng.integers(4))],
                "hotel_price": round(float(rng.uniform(40, 400)), 2),
                "hotel_id": int(rng.integers(1, 5000)),
            }
        )
    return rows


def recs_columns(rows: list[dict[str, object]]) -> dict[str, np.ndarray]:
    """Rows as columns of their raw serving types (str, int64, float32)."""
    dtypes = {"day_of_week": np.int64, "hotel_price": np.float32, "hotel_id": np.int64}
    return {k: np.asarray([r[k] for r in rows], dtype=dtypes.get(k, object)) for k in RECS_COLUMNS}


def photos(n: int, seed: int) -> list[bytes]:
    """``n`` distinct 64x64 JPEG "photos": a sky/floor gradient with a few coloured blocks."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:] = np.linspace(rng.integers(60, 200), rng.integers(0, 120), 64)[:, None, None].astype(np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            y, x = rng.integers(0, 56, 2)
            h, w = rng.integers(6, 30, 2)
            img[y : y + h, x : x + w] = rng.integers(0, 256, 3)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def decoded(jpegs: list[bytes]) -> np.ndarray:
    """The photos as the tagger signature takes them: uint8 (n, 64, 64, 3)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB").resize((64, 64))) for j in jpegs])


# ---- request bodies, one builder per format -------------------------------------------------


def jdump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def query_path(base: str, row: dict[str, object]) -> str:
    return f"{base}?{urlencode(row)}"


def instances_json(rows: list[dict[str, object]]) -> bytes:
    """fnserve's and TF Serving's row format: ``{"instances": [{...}, ...]}``."""
    return jdump({"instances": rows})


def v2_json(rows: list[dict[str, object]]) -> bytes:
    """Open Inference Protocol (KServe v2) JSON: one named, typed, shaped tensor per column."""
    types = {"day_of_week": "INT64", "hotel_id": "INT64", "hotel_price": "FP32"}
    inputs = [
        {"name": k, "shape": [len(rows)], "datatype": types.get(k, "BYTES"), "data": [r[k] for r in rows]}
        for k in RECS_COLUMNS
    ]
    return jdump({"inputs": inputs})


def v2_binary_photos(jpegs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """v2 binary tensor extension: a JSON header, then BYTES elements each with a 4-byte length."""
    data = b"".join(struct.pack("<I", len(j)) + j for j in jpegs)
    return v2_binary_body({"name": "photo", "shape": [len(jpegs)], "datatype": "BYTES"}, data)


def v2_binary_pixels(pixels: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """v2 binary tensor extension: a JSON header, then the decoded photos' raw uint8 bytes."""
    data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return v2_binary_body({"name": "photo", "shape": list(pixels.shape), "datatype": "UINT8"}, data)


def v2_binary_body(tensor: dict[str, object], data: bytes) -> tuple[bytes, dict[str, str]]:
    """One input ``tensor`` whose elements are ``data``: the body and its headers."""
    header = jdump({"inputs": [tensor | {"parameters": {"binary_data_size": len(data)}}]})
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + data, headers


def b64_photos_json(jpegs: list[bytes]) -> bytes:
    """fnserve's JSON form of images: ``{"instances": [{"photo": {"b64": ...}}, ...]}``."""
    return jdump({"instances": [{"photo": {"b64": base64.b64encode(j).decode()}} for j in jpegs]})


def arrow_stream(columns: dict[str, object]) -> bytes:
    """An Arrow IPC stream with one record batch of ``columns``."""
    import pyarrow as pa

    batch = pa.RecordBatch.from_pydict(columns)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def arrow_recs(rows: list[dict[str, object]]) -> bytes:
    return arrow_stream({k: [r[k] for r in rows] for k in RECS_COLUMNS})


def arrow_pixels(pixels: np.ndarray) -> bytes:
    """Decoded photos as an Arrow tensor column: (n, 64, 64, 3) uint8 as nested fixed-size lists."""
    import pyarrow as pa

    array: pa.Array = pa.array(pixels.reshape(-1), pa.uint8())
    for size in reversed(pixels.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return arrow_stream({"photo": array})


def arrow_photos(jpegs: list[bytes]) -> bytes:
    import pyarrow as pa

    return arrow_stream({"photo": pa.array(jpegs, pa.binary())})

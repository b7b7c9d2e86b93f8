"""The training reference: what a version's inputs and outputs looked like when it was trained.

Training writes it as :data:`REFERENCE_FILE` into the checkpoint folder before publishing, so the
manifest covers it (``TrainContext.publish(..., reference_inputs=..., reference_outputs=...)``)::

    {"format": 1, "features": [
        {"name": "hotel_price", "role": "input", "type": "numeric", "source": "hotel_price",
         "edges": [21.5, 64.0, ...], "counts": [0, 800, ...], "missing": 0},
        {"name": "season", "role": "input", "type": "categorical", "source": "season",
         "values": ["summer", "winter", ...], "counts": [...], "missing": 0}, ...]}

The runtime reads it when it loads the version and checks it against the function's inputs
(:func:`check_inputs`); a reference that does not match is reported and ignored, never fatal.

>>> doc = build({"price": np.arange(100.0), "season": np.array(["a", "b"] * 50, dtype=object)},
...             np.linspace(0, 1, 100))
>>> [(f["name"], f["type"], f["role"]) for f in doc["features"]]
[('price', 'numeric', 'input'), ('season', 'categorical', 'input'), ('output', 'numeric', 'output')]
>>> parse(doc).features[0].labels()[:2]
['<0', '0-9.9']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fnserve.runtime.monitor.features import Feature, infer
from fnserve.runtime.schema import Schema

REFERENCE_FILE = "fnserve-reference.json"
FORMAT = 1
_EXPECTED = {"int": "numeric", "float": "numeric", "str": "categorical", "category": "categorical"}
_EXPECTED |= {"bool": "categorical", "tensor": "tensor", "image": "tensor"}


@dataclass(frozen=True)
class Reference:
    features: tuple[Feature, ...]
    counts: tuple[np.ndarray, ...]  # per feature, one count per bin

    def shares(self, i: int) -> np.ndarray:
        counts = self.counts[i].astype(np.float64)
        return counts / counts.sum() if counts.sum() > 0 else counts


def build(inputs: Mapping[str, Any], outputs: Any = None) -> dict[str, Any]:
    """The reference document of training ``inputs`` (columns by input name) and of the model's
    ``outputs`` on held-out data (one column, or a mapping of named output columns)."""
    columns: list[tuple[str, str, str, Any]] = [(name, "input", name, col) for name, col in inputs.items()]
    if isinstance(outputs, Mapping):
        columns += [(str(key), "output", str(key), col) for key, col in outputs.items()]
    elif outputs is not None:
        columns.append(("output", "output", "", outputs))
    features = []
    for name, role, source, column in columns:
        if hasattr(column, "numpy") and not isinstance(column, np.ndarray):
            column = column.numpy()
        for feature in infer(name, role, source, column):
            index = feature.indices(column)
            counts = np.bincount(index, minlength=feature.bins + 1)
            features.append({**feature.to_json(), "counts": counts[:-1].tolist(), "missing": int(counts[-1])})
    return {"format": FORMAT, "features": features}


def write(folder: Path, doc: Mapping[str, Any]) -> Path:
    path = folder / REFERENCE_FILE
    path.write_text(json.dumps(doc, allow_nan=False))
    return path


def read(folder: str | Path | None) -> tuple[Reference | None, str | None]:
    """The reference in a checkpoint folder, or (None, why not): "no reference" or the problem."""
    path = Path(folder) / REFERENCE_FILE if folder is not None else None
    if path is None or not path.is_file():
        return None, "no reference"
    try:
        return parse(json.loads(path.read_text())), None
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"{REFERENCE_FILE} is malformed ({exc}); ignored"


def parse(doc: Any) -> Reference:
    """A reference document as features and counts; ``ValueError`` when it is malformed."""
    if (
        not isinstance(doc, Mapping)
        or doc.get("format") != FORMAT
        or not isinstance(doc.get("features"), list)
    ):
        raise ValueError(f"expected an object with format {FORMAT} and a list of features")
    features, counts = [], []
    for entry in doc["features"]:
        feature = Feature.from_json(entry)
        count = np.asarray(entry["counts"], dtype=np.int64)
        if count.shape != (feature.bins,) or (count < 0).any():
            raise ValueError(f"feature {feature.name!r}: expected {feature.bins} counts")
        features.append(feature)
        counts.append(count)
    return Reference(tuple(features), tuple(counts))


def check_inputs(reference: Reference, schema: Schema) -> str | None:
    """Why ``reference`` does not describe the function's inputs, or None when it does."""
    by_source: dict[str, set[str]] = {}
    for f in reference.features:
        if f.role == "input":
            by_source.setdefault(f.source, set()).add(f.type)
    problems = []
    for field in schema.inputs:
        types = by_source.pop(field.name, None)
        want = _EXPECTED[field.kind]
        if types is None:
            problems.append(f"input {field.name!r} is not in it")
        elif types != {want}:
            problems.append(f"input {field.name!r} is {'/'.join(sorted(types))} there, {want} here")
    problems += [f"it has input {name!r}, which the function does not take" for name in sorted(by_source)]
    return "; ".join(problems) or None

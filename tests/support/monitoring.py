"""The ``watched`` test function trained and published with a monitoring reference, and traffic for it."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from fnserve.runtime.monitor import REFERENCE_FILE
from fnserve.runtime.training import TrainContext

WATCHED = Path(__file__).parent / "fns" / "watched"
WEIGHTS = {"scale": 0.05}


def load_module(path: Path, name: str) -> ModuleType:
    """A function folder's file (predict.py, train.py) imported under ``name``, as a test reads it."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def watched_module() -> ModuleType:
    return load_module(WATCHED / "predict.py", "watched_for_tests")


def publish_watched(store_url: str, scratch: Path, *, reference: str = "train") -> int:
    """Publish a version of ``watched``; ``reference`` is "train" (inputs and outputs), "none",
    "mismatched" (a reference of other inputs) or "malformed" (not a reference); returns the version."""
    module = watched_module()
    ctx = TrainContext.from_env(
        {"FNSERVE_STORE": store_url, "FNSERVE_PROJECT": str(scratch)}, default_function="watched"
    )
    folder = scratch / f"watched-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "weights.json").write_text(json.dumps(WEIGHTS))
    data = module.training_data()
    if reference == "none":
        return ctx.publish(folder)
    if reference == "malformed":
        (folder / REFERENCE_FILE).write_text('{"format": 1, "features": [{"name": "price"}]}')
        return ctx.publish(folder)
    if reference == "mismatched":
        other = {"distance_km": data["price"], "city": data["city"]}
        return ctx.publish(folder, reference_inputs=other)
    return ctx.publish(folder, reference_inputs=data, reference_outputs=module.predictions(WEIGHTS, data))


def traffic(rows: int, seed: int, *, price_factor: float = 1.0) -> list[dict[str, Any]]:
    """Instances drawn like the training data (another seed), prices multiplied by ``price_factor``."""
    data = watched_module().training_data(rows, seed)
    return [
        {"price": float(p) * price_factor, "city": str(c), "nights": int(n)}
        for p, c, n in zip(data["price"], data["city"], data["nights"], strict=True)
    ]


def features(monitor: dict[str, Any], version: int) -> dict[str, dict[str, Any]]:
    """The features of one version of ``watched`` in a ``/monitor`` document, by name."""
    entry = monitor["functions"]["watched"]["versions"][str(version)]
    return {f["name"]: f for f in entry["features"]}

"""The tiny model of tests/support/fns/optimizable, published with evaluation data, for the
`fn optimize` tests."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnserve.runtime.evaluation import Evaluation
from fnserve.runtime.store import CheckpointStore
from fnserve.runtime.training import TrainContext

FOLDER = Path(__file__).parent / "fns" / "optimizable"
WEIGHTS = (3.0, 1.0, -1.5)  # probability = sigmoid(3 x + 1 b - 1.5)


def rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs and 0/1 labels drawn from the model's own probabilities: an AUC near 0.7."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n)
    kind = rng.choice(np.array(["a", "b"], dtype=object), n)
    logit = WEIGHTS[0] * x + WEIGHTS[1] * (kind == "b") + WEIGHTS[2]
    booked = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return {"x": x, "kind": kind, "booked": booked}


def save_model(folder: Path, weights: Sequence[float] = WEIGHTS) -> None:
    """A SavedModel whose serving signature takes x and b (float32) and returns probability."""
    import keras
    import tensorflow as tf

    x = keras.Input(shape=(), name="x", dtype="float32")
    b = keras.Input(shape=(), name="b", dtype="float32")
    stacked = keras.ops.stack([x, b], axis=-1)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model([x, b], keras.ops.squeeze(dense(stacked), -1))
    dense.set_weights(
        [np.array([[weights[0]], [weights[1]]], np.float32), np.array([weights[2]], np.float32)]
    )

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.float32, "x"), tf.TensorSpec([None], tf.float32, "b")]
    )
    def serve(x: Any, b: Any) -> dict[str, Any]:
        return {"probability": model([x, b], training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.write_out(str(folder), verbose=False)


def publish(
    store_root: str, cache: Path, work: Path, *, evaluation: bool = True, representative: Any = True
) -> CheckpointStore:
    """Version 1 of optimizable, trained by hand, with held-out data and a training sample."""
    store = CheckpointStore(store_root, cache_dir=cache)
    ctx = TrainContext(function="optimizable", store=store, data=None)
    folder = work / "export"
    save_model(folder)
    held = rows(400, seed=1)
    train = rows(300, seed=2)
    ctx.publish(
        folder,
        metrics={"auc": 0.8},
        evaluation=(
            Evaluation({"x": held["x"], "kind": held["kind"]}, held["booked"], ("roc_auc", "log_loss"))
            if evaluation
            else None
        ),
        representative=(
            {"x": train["x"], "kind": train["kind"]} if representative is True else representative or None
        ),
    )
    return store


def damaging_converter(base_dir: Path, out_dir: Path, technique: str, **_: Any) -> dict[str, Any]:
    """A converter that ruins the model (inverted weights): its variant loses most of its AUC."""
    shutil.copytree(base_dir, out_dir, ignore=shutil.ignore_patterns("fnserve-manifest.json", ".fnserve*"))
    for child in ("saved_model.pb", "variables", "assets", "fingerprint.pb"):
        path = out_dir / child
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    save_model(out_dir, [-w for w in WEIGHTS])
    return {"damaged": True}

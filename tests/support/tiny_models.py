"""Tiny real models for the model-format tests: Keras, exported as a SavedModel in seconds.

``export_scorer`` writes a model of the examples' shape: an id input through an embedding, a
float feature vector, a Dense stack wide enough that its weights dominate the file, and two
named outputs (one column, one matrix) from a ``serving_default`` signature of any batch size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

KINDS = 5  # ids 0..4
FEATURES = 8
WIDTH = 128


def export_scorer(folder: Path, seed: int = 0) -> Path:
    """A SavedModel: ``kind`` (int32 ids) and ``x`` (float32, 8 wide) in; ``score``, ``logits`` out."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    kind = keras.Input(shape=(), dtype="int32", name="kind")
    x = keras.Input(shape=(FEATURES,), dtype="float32", name="x")
    embedded = keras.layers.Embedding(KINDS, 4)(kind)
    hidden = keras.layers.Dense(WIDTH, activation="relu")(keras.layers.Concatenate()([embedded, x]))
    hidden = keras.layers.Dense(WIDTH, activation="relu")(hidden)
    logits = keras.layers.Dense(3)(hidden)
    model = keras.Model([kind, x], logits)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32, name="kind"),
            tf.TensorSpec([None, FEATURES], tf.float32, name="x"),
        ]
    )
    def serve(kind, x):
        logits = model([kind, x], training=False)
        return {"score": tf.sigmoid(logits[:, 0]), "logits": logits}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.write_out(str(folder), verbose=False)
    return folder


def scorer_inputs(rows: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "kind": rng.integers(0, KINDS, rows).astype(np.int32),
        "x": rng.normal(size=(rows, FEATURES)).astype(np.float32),
    }


def convert_float32(saved_model: Path, folder: Path) -> Path:
    """A plain float32 LiteRT conversion (no optimization), with its ``fnserve-model.json``."""
    import tensorflow as tf

    from fnserve.runtime.models import write_descriptor

    folder.mkdir(parents=True, exist_ok=True)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    (folder / "model.tflite").write_bytes(converter.convert())
    write_descriptor(folder, {"format": "litert", "path": "model.tflite"})
    return folder


def export_without_signature(folder: Path) -> Path:
    """A SavedModel with a variable and a function but no serving signature."""
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.double = tf.function(
        lambda x: x * module.scale, input_signature=[tf.TensorSpec([None], tf.float32)]
    )
    tf.saved_model.save(module, str(folder), signatures={})
    return folder


def export_string_lookup(folder: Path) -> Path:
    """A SavedModel whose signature looks strings up in a hash table (what converters refuse)."""
    import tensorflow as tf

    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(["a", "b", "c"], [1.0, 2.0, 3.0]), default_value=0.0
    )
    module.scale = tf.Variable(0.5)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word")])
    def serve(word):
        return {"score": module.table.lookup(word) * module.scale}

    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve})
    return folder

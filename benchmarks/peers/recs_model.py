"""The recs checkpoint as a peer serves it: the vocabularies' id lookups, then the SavedModel.

The recs model takes integer ids (``functions/recs/predict.py`` maps raw values to them with the
``vocabularies.json`` published beside the model, id 0 for a value never seen). A user of another
server writes the same two steps; this is them, with NumPy and TensorFlow only (all a peer's
virtual environment has), so every peer and the model limit do the same work per row as
fnserve's function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("user_country", "user_language", "day_of_week", "season", "hotel_price", "hotel_id")
CATEGORICAL = ("user_country", "user_language", "day_of_week", "season", "hotel_id")


def _typed(values: Any) -> np.ndarray:
    values = np.asarray(values)
    return values.astype(str) if values.dtype.kind in "OSU" else values.astype(np.int64)


class RecsModel:
    """``model(columns) -> probability``: columns by name (lists or arrays of raw values)."""

    def __init__(self, folder: str | Path) -> None:
        import tensorflow as tf

        folder = Path(folder)
        self.signature: Any = tf.saved_model.load(str(folder)).signatures["serving_default"]
        plain = json.loads((folder / "vocabularies.json").read_text())
        self.vocabularies = {name: np.unique(_typed(plain[name])) for name in CATEGORICAL}

    def ids(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> dict[str, np.ndarray]:
        found = {}
        for name, vocabulary in self.vocabularies.items():
            values = _typed(columns[name])
            at = np.minimum(np.searchsorted(vocabulary, values), len(vocabulary) - 1)
            found[name] = np.where(vocabulary[at] == values, at + 1, 0).astype(np.int32)
        return found

    def __call__(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        price = np.asarray(columns["hotel_price"], dtype=np.float32)
        return self.signature(**self.ids(columns), hotel_price=price)["probability"].numpy()

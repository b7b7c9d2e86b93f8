"""Hotel recommendations: the probability that a user books a hotel.

The talk's recommendation model. The checkpoint, written by ``train.py``, holds the model and
the vocabularies it was trained with (``vocabularies.json``). The id lookups happen here, in
NumPy, not inside the model: a hash-table lookup is what a converter cannot quantize or fold, so
kept out, the same model quantizes, freezes and serves as a SavedModel, a LiteRT flatbuffer or a
frozen graph, and this file serves each unedited. A value the vocabulary lacks (an unknown
country or hotel) gets the out-of-vocabulary id 0, so it scores instead of failing.

    curl 'http://127.0.0.1:8080/function/recs?user_country=NL&user_language=nl&day_of_week=5&season=summer&hotel_price=120&hotel_id=991'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from fnserve import Field, load_model, predict

VOCABULARY_FILE = "vocabularies.json"
CATEGORICAL = ("user_country", "user_language", "day_of_week", "season", "hotel_id")
OOV_ID = 0  # the id of every value a vocabulary lacks; known values are 1..len(vocabulary)


@dataclass(frozen=True)
class Vocabularies:
    """The sorted values of each categorical column; a value's id is its position + 1."""

    values: Mapping[str, np.ndarray]  # column -> sorted unique values (str or int64)

    @classmethod
    def learn(cls, columns: Mapping[str, np.ndarray]) -> Vocabularies:
        """The vocabularies of training columns (every value seen gets an id)."""
        return cls({name: np.unique(_typed(columns[name])) for name in CATEGORICAL})

    def size(self, name: str) -> int:
        """Ids of ``name``: its values plus the out-of-vocabulary id."""
        return len(self.values[name]) + 1

    def ids(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """int32 ids of each categorical column, vectorized (a binary search per column).

        >>> vocabularies = Vocabularies({"season": np.array(["summer", "winter"])})
        >>> vocabularies.ids({"season": np.array(["winter", "monsoon"], dtype=object)})["season"]
        array([2, 0], dtype=int32)
        """
        found = {}
        for name, vocabulary in self.values.items():
            values = _typed(columns[name])
            at = np.minimum(np.searchsorted(vocabulary, values), max(len(vocabulary) - 1, 0))
            known = vocabulary[at] == values if len(vocabulary) else np.zeros(values.shape, bool)
            found[name] = np.where(known, at + 1, OOV_ID).astype(np.int32)
        return found

    def write(self, folder: Path) -> None:
        plain = {name: values.tolist() for name, values in self.values.items()}
        (folder / VOCABULARY_FILE).write_text(json.dumps(plain, ensure_ascii=False) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Vocabularies:
        plain = json.loads((folder / VOCABULARY_FILE).read_text())
        return cls({name: np.unique(_typed(np.asarray(values))) for name, values in plain.items()})


def _typed(values: Any) -> np.ndarray:
    """Strings as a NumPy str array, numbers as int64: the types a binary search compares."""
    values = np.asarray(values)
    return values.astype(str) if values.dtype.kind in "OSU" else values.astype(np.int64)


@dataclass(frozen=True)
class Recommender:
    model: Any  # fnserve's Model: whichever format the version holds
    vocabularies: Vocabularies


def load(checkpoint_dir: str) -> Recommender:
    """The model in ``checkpoint_dir`` (fetched and verified by the runtime) and its vocabularies."""
    return Recommender(load_model(checkpoint_dir), Vocabularies.read(Path(checkpoint_dir)))


@predict(loader=load, max_batch_size=1024)
def recs(
    recommender: Recommender,
    user_country: str,
    user_language: str,
    day_of_week: Annotated[int, Field(ge=1, le=7, description="1 = Monday ... 7 = Sunday")],
    season: Literal["winter", "spring", "summer", "autumn"],
    hotel_price: Annotated[float, Field(ge=0, description="price per night in EUR")],
    hotel_id: int,
) -> float:
    """Probability that the user books the hotel."""
    raw = {
        "user_country": user_country,
        "user_language": user_language,
        "day_of_week": day_of_week,
        "season": season,
        "hotel_id": hotel_id,
    }
    # One model call for the whole batch; the model casts hotel_price to its float32.
    outputs = recommender.model(**recommender.vocabularies.ids(raw), hotel_price=hotel_price)
    return outputs["probability"]  # float32: served as such, without float64 noise digits

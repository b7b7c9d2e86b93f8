"""Hotel recommendations: the probability that a user books a hotel.

The talk's recommendation model. The checkpoint is a SavedModel written by ``train.py``;
its ``serving_default`` signature takes the raw columns of a whole batch (strings as
``tf.string``, ints as ``int64``, prices as ``float32``) and does the id lookups itself,
with out-of-vocabulary buckets, so unknown countries or hotels get a score, not an error.

    curl 'http://127.0.0.1:8080/function/recs?user_country=NL&user_language=nl&day_of_week=5&season=summer&hotel_price=120&hotel_id=991'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np

from fnserve import Field, predict


def load(checkpoint_dir: str) -> Any:
    """Load the SavedModel in ``checkpoint_dir`` (fetched and verified by the runtime)."""
    import tensorflow as tf

    return tf.saved_model.load(checkpoint_dir)


@predict(loader=load, max_batch_size=1024)
def recs(
    model: Any,
    user_country: str,
    user_language: str,
    day_of_week: Annotated[int, Field(ge=1, le=7, description="1 = Monday ... 7 = Sunday")],
    season: Literal["winter", "spring", "summer", "autumn"],
    hotel_price: Annotated[float, Field(ge=0, description="price per night in EUR")],
    hotel_id: int,
) -> float:
    """Probability that the user books the hotel."""
    # One call of the compiled serving signature for the whole batch (never Keras'
    # eager predict, ~100x slower per call). Its input dtypes are fixed: cast to them.
    outputs = model.signatures["serving_default"](
        user_country=np.asarray(user_country, dtype=object),
        user_language=np.asarray(user_language, dtype=object),
        day_of_week=np.asarray(day_of_week, dtype=np.int64),
        season=np.asarray(season, dtype=object),
        hotel_price=np.asarray(hotel_price, dtype=np.float32),
        hotel_id=np.asarray(hotel_id, dtype=np.int64),
    )
    return outputs["probability"].numpy()  # float32: served as such, without float64 noise digits

"""BentoML: the recs SavedModel's serving signature behind a batchable API.

BentoML's native JSON names the API's arguments: ``{"instances": [{...}, ...]}`` for
``predict(instances)``; each instance is validated by pydantic. With ``batchable=True`` the
adaptive batcher concatenates concurrent calls' lists (up to ``max_batch_size``, waiting at most
``max_latency_ms``) into one call and splits the result.

    BENCH_RECS_MODEL=.fnserve/store/recs/2 BENCH_MAX_BATCH=64 \
        .bench/venvs/bentoml/bin/bentoml serve service:Recs --port 8400  (from this folder)
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
from pydantic import BaseModel

MAX_BATCH = int(os.environ.get("BENCH_MAX_BATCH", "1"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_MAX_LATENCY_MS", "1000"))


class Instance(BaseModel):
    user_country: str
    user_language: str
    day_of_week: int
    season: str
    hotel_price: float
    hotel_id: int


@bentoml.service(workers=1, traffic={"timeout": 30})
class Recs:
    def __init__(self) -> None:
        import tensorflow as tf

        self.signature: Any = tf.saved_model.load(os.environ["BENCH_RECS_MODEL"]).signatures[
            "serving_default"
        ]

    @bentoml.api(batchable=MAX_BATCH > 1, max_batch_size=max(MAX_BATCH, 2), max_latency_ms=MAX_LATENCY_MS)
    def predict(self, instances: list[Instance]) -> list[float]:
        probability = self.signature(
            user_country=np.asarray([i.user_country for i in instances], dtype=object),
            user_language=np.asarray([i.user_language for i in instances], dtype=object),
            day_of_week=np.asarray([i.day_of_week for i in instances], dtype=np.int64),
            season=np.asarray([i.season for i in instances], dtype=object),
            hotel_price=np.asarray([i.hotel_price for i in instances], dtype=np.float32),
            hotel_id=np.asarray([i.hotel_id for i in instances], dtype=np.int64),
        )["probability"]
        return probability.numpy().tolist()

"""BentoML: the recs checkpoint (id lookups, then the SavedModel) behind a batchable API.

BentoML's native JSON names the API's arguments: ``{"instances": [{...}, ...]}`` for
``predict(instances)``; each instance is validated by pydantic. With ``batchable=True`` the
adaptive batcher concatenates concurrent calls' lists (up to ``max_batch_size``, waiting at most
``max_latency_ms``) into one call and splits the result.

    BENCH_RECS_MODEL=.fnserve/store/recs/2 BENCH_MAX_BATCH=64 \
        .bench/venvs/bentoml/bin/bentoml serve service:Recs --port 8400  (from this folder)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bentoml
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recs_model import COLUMNS, RecsModel  # benchmarks/peers, beside this folder

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
        self.model = RecsModel(os.environ["BENCH_RECS_MODEL"])

    @bentoml.api(batchable=MAX_BATCH > 1, max_batch_size=max(MAX_BATCH, 2), max_latency_ms=MAX_LATENCY_MS)
    def predict(self, instances: list[Instance]) -> list[float]:
        probability = self.model({k: [getattr(i, k) for i in instances] for k in COLUMNS})
        return probability.tolist()

"""A tiny trained function for monitoring tests: a price and a city in, a score and a label out.

Its checkpoint is ``weights.json`` ({"scale": float}); tests publish it with a reference built
from :func:`training_data` and :func:`predictions` through ``TrainContext.publish``.
"""

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fnserve import predict

CITIES = ("amsterdam", "berlin", "paris")


def training_data(rows: int = 5_000, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "price": rng.lognormal(np.log(100.0), 0.4, size=rows),
        "city": rng.choice(np.array(CITIES, dtype=object), size=rows, p=[0.5, 0.3, 0.2]),
        "nights": rng.integers(1, 8, size=rows),
    }


def predictions(model: dict[str, float], data: dict[str, np.ndarray]) -> dict[str, Any]:
    return watched(model, data["price"], data["city"], data["nights"])


def load(checkpoint_dir: str) -> dict[str, float]:
    return json.loads((Path(checkpoint_dir) / "weights.json").read_text())


@predict(loader=load, checkpoint="watched", max_batch_size=256)
def watched(
    model: dict[str, float], price: float, city: Literal["amsterdam", "berlin", "paris"], nights: int = 1
) -> dict[str, Any]:
    score = 1.0 / (1.0 + np.exp(-(np.asarray(price) - 100.0) * model["scale"]))
    return {"score": score, "label": np.where(score > 0.5, "pricey", "cheap").astype(object)}

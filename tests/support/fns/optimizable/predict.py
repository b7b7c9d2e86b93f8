"""A tiny logistic model over a number and a category, loaded with fnserve's model API, so that
every variant fn optimize makes of it (SavedModel, LiteRT, frozen graph) loads unedited."""

from typing import Any, Literal

import numpy as np

from fnserve import predict
from fnserve.runtime.models import load_model


@predict(loader=load_model, max_batch_size=32)
def optimizable(model: Any, x: float, kind: Literal["a", "b"]) -> float:
    outputs = model(x=np.asarray(x, dtype=np.float32), b=(np.asarray(kind) == "b").astype(np.float32))
    return np.asarray(outputs["probability"])

"""For batch scoring: a model read from the checkpoint (weight.txt), bounded inputs (so rows can be
bad), two named outputs, and a pace: FNSERVE_TEST_RATED_PAUSE_S seconds per call, so that tests can
stop a job half-way."""

import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from fnserve import Field, predict


def load(checkpoint_dir: str) -> float:
    return float((Path(checkpoint_dir) / "weight.txt").read_text())


@predict(loader=load, max_batch_size=64)
def rated(
    model: float,
    price: Annotated[float, Field(ge=0)],
    day: Annotated[int, Field(ge=1, le=7)],
    season: Literal["winter", "summer"] = "winter",
) -> dict[str, Any]:
    pause = float(os.environ.get("FNSERVE_TEST_RATED_PAUSE_S") or 0)
    if pause:
        time.sleep(pause)
    return {"score": np.asarray(price) * model + day, "summer": np.asarray(season) == "summer"}

"""Finite inputs and a 'model' read from the checkpoint, for lookup tables and the result cache.

The weight in weight.txt scales a score computed from every input, so each version answers
differently; the outputs are named columns of two dtypes (float32, int64), which every protocol
must give back the same whether a table or the model answered.
"""

import enum
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from fnserve import Field, predict


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


def load(checkpoint_dir: str) -> float:
    return float((Path(checkpoint_dir) / "weight.txt").read_text())


@predict(loader=load, max_batch_size=8)
def tabled(
    model: float,
    country: Literal["NL", "DE", "FR"],
    day: Annotated[int, Field(ge=1, le=7)],
    member: bool,
    size: Size = Size.SMALL,
) -> dict:
    lengths = np.asarray([len(c) + (s == "large") for c, s in zip(country, size, strict=True)])
    score = (model * day + lengths + np.asarray(member) * 0.5).astype(np.float32) / np.float32(3)
    return {"score": score, "bucket": (np.asarray(day) * 10 + np.asarray(member)).astype(np.int64)}

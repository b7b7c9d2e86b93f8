"""Every input kind, echoed back so tests can see what the runtime decoded."""

from typing import Annotated, Literal

import numpy as np

from fnserve import Field, Image, Tensor, predict


@predict(max_batch_size=8)
def kinds(
    count: Annotated[int, Field(ge=0, le=100)],
    ratio: float,
    flag: bool,
    season: Literal["winter", "summer"],
    vector: Tensor[np.float32, 3],
    photo: Image[4, 4],
    note: str = "none",
    ratio_or_nan: Annotated[float, Field(allow_nan=True)] = 0.0,
) -> dict[str, float]:
    return {
        "count": count,
        "ratio": ratio,
        "flag": flag.astype(float),
        "summer": (season == "summer").astype(float),
        "vector_sum": vector.sum(axis=1),
        "photo_mean": photo.reshape(len(photo), -1).mean(axis=1),
        "note_len": np.array([len(n) for n in note], dtype=float),
        "batch": np.full(len(count), len(count), dtype=float),
    }

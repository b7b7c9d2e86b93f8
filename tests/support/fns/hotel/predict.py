"""Several scalar inputs with bounds and a choice: one answer names every bad one."""

from typing import Annotated, Literal

import numpy as np

from fnserve import Field, predict


@predict
def hotel(
    country: str,
    day_of_week: Annotated[int, Field(ge=1, le=7)],
    season: Literal["winter", "summer"],
    price: Annotated[float, Field(ge=0)],
    stars: int = 3,
) -> float:
    return np.asarray(price) * 0 + day_of_week + stars

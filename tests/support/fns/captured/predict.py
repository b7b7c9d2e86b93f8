"""Two inputs and two named outputs, no model: what payload capture writes and training reads."""

import numpy as np

from fnserve import predict


@predict
def captured(price: float, country: str) -> dict:
    return {"score": np.asarray(price) * 2, "loud": [c.upper() for c in country]}

"""No model: doubles its input. The smallest function there is."""

import numpy as np

from fnserve import predict


@predict
def double(x: float) -> float:
    return np.asarray(x) * 2

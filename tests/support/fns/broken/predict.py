"""Raises on a negative input, so tests can see a failing batch fail every waiter."""

import numpy as np

from fnserve import predict


@predict
def broken(x: float) -> float:
    if (np.asarray(x) < 0).any():
        raise RuntimeError("secret internal detail /home/user/model.bin")
    return x

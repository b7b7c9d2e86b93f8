"""A model with a fixed cost per call (50 ms, whatever the batch): a known capacity of 80/s."""

import time

import numpy as np

from fnserve import predict


@predict(max_batch_size=4, max_queue=16, timeout_s=2)
def sleepy(x: float) -> float:
    time.sleep(0.05)
    return np.asarray(x)

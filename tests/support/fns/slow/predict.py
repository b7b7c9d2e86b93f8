"""Sleeps, so tests can hold requests in flight (draining, batching, deadlines)."""

import time

import numpy as np

from fnserve import predict


@predict(max_batch_size=64, timeout_s=5)
def slow(seconds: float) -> float:
    time.sleep(float(np.max(seconds)))
    return seconds

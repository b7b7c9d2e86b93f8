"""A model that is its own checkpoint's version number (read from version.txt), answered with each
prediction: tests compare the version an answer is labelled with to the model that computed it.
``hold`` seconds of sleep per call keep the model busy, so requests queue while a swap happens;
``call`` numbers the model calls, so tests can tell which requests shared one."""

import itertools
import time
from pathlib import Path

import numpy as np

from fnserve import predict

_calls = itertools.count(1)


def load(checkpoint_dir: str) -> int:
    return int((Path(checkpoint_dir) / "version.txt").read_text())


@predict(loader=load, max_batch_size=64, timeout_s=30, cache_max_age_s=60)
def stamped(model: int, x: float, hold: float = 0.0) -> dict[str, float]:
    time.sleep(float(np.max(hold)))
    n = len(x)
    return {"version": np.full(n, model), "call": np.full(n, next(_calls)), "x": np.asarray(x)}

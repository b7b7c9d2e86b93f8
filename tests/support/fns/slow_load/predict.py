"""A model whose load takes as long as its checkpoint's seconds.txt says: a slow cold start."""

import time
from pathlib import Path

from fnserve import predict


def load(checkpoint_dir: str) -> float:
    time.sleep(float((Path(checkpoint_dir) / "seconds.txt").read_text()))
    return 1.0


@predict(loader=load)
def slow_load(model: float, x: float) -> float:
    return x * model

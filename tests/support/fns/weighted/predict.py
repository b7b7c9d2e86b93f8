"""A 'model' read from the checkpoint: the weight in weight.txt multiplies the input."""

from pathlib import Path

from fnserve import predict


def load(checkpoint_dir: str) -> float:
    return float((Path(checkpoint_dir) / "weight.txt").read_text())


@predict(loader=load)
def weighted(model: float, x: float) -> float:
    return x * model

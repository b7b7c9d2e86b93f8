"""The ``weighted`` function gone wrong: it loads its checkpoint, then fails every request (500)."""

from pathlib import Path

from fnserve import predict


def load(checkpoint_dir: str) -> float:
    return float((Path(checkpoint_dir) / "weight.txt").read_text())


@predict(loader=load)
def weighted(model: float, x: float) -> float:
    raise RuntimeError("this version is broken on purpose")

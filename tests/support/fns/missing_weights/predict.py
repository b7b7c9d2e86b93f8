"""A loader that fails as a checkpoint without its weights does, naming the missing file: tests see
that reason reach `/readyz` and the 503 of a request held for a replica that never gets ready."""

from fnserve import predict


def load(checkpoint_dir: str) -> object:
    raise RuntimeError("weights file model.bin is missing")


@predict(loader=load)
def missing_weights(x: float) -> float:
    return x

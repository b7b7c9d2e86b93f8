"""A loader that fails as a checkpoint without its weights does, naming the missing file and
where it looked (a URL with credentials in it): tests see that reason reach `/readyz` and the 503
of a request held for a replica that never gets ready, with the credentials masked."""

from fnserve import predict

WHERE = "https://reader:hunter2-secret@models.example/recs/3"


def load(checkpoint_dir: str) -> object:
    raise RuntimeError(f"weights file model.bin is missing from {WHERE}\n(second line: not passed on)")


@predict(loader=load)
def missing_weights(model: object, x: float) -> float:
    return x

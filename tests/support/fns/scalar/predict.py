"""Written one instance at a time; the runtime still batches calls."""

from fnserve import predict


@predict(vectorized=False)
def scalar(word: str, times: int = 2) -> str:
    return word * times

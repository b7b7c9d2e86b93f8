from fnserve import predict


@predict(name="same")
def first(x: float) -> float:
    return x

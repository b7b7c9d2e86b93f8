from fnserve import predict


@predict(name="same")
def second(x: float) -> float:
    return x

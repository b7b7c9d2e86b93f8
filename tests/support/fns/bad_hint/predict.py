from fnserve import predict


@predict
def bad_hint(x) -> float:
    return x

from fnserve import predict


@predict
def bad_type(x: complex) -> float:
    return x

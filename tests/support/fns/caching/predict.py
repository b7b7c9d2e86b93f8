"""Cache policies of GET predictions: cacheable for a minute, and never cacheable."""

import numpy as np

from fnserve import predict


@predict(cache_max_age_s=60)
def cached(x: float) -> float:
    return np.asarray(x) + 1


@predict(cache_max_age_s=None)
def uncached(x: float) -> float:
    return np.random.default_rng().random(len(x)) + x

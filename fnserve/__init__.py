"""fnserve: write a ``@predict`` function, serve it, call it.

What a function author types lives here; everything else is internal.
"""

from fnserve.runtime.spec import predict
from fnserve.runtime.types import Field, Image, Tensor

__all__ = [
    "AsyncClient",
    "Client",
    "Evaluation",
    "Field",
    "Image",
    "Tensor",
    "TrainContext",
    "load_model",
    "predict",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Lazy so that `import fnserve` in a function file does not pull in fsspec and friends.
    if name in ("Client", "AsyncClient"):
        from fnserve import client

        return getattr(client, name)
    if name == "TrainContext":
        from fnserve.runtime.training import TrainContext

        return TrainContext
    if name == "load_model":
        from fnserve.runtime.models import load_model

        return load_model
    if name == "Evaluation":
        from fnserve.runtime.evaluation import Evaluation

        return Evaluation
    raise AttributeError(f"module 'fnserve' has no attribute {name!r}")

"""The input/output types a function author writes in type hints.

Hints describe *one instance*; a vectorized function receives each input as a column
(a numpy array whose first axis is the batch)::

    from typing import Annotated, Literal
    from fnserve import predict, Tensor, Image, Field

    @predict
    def score(
        price: Annotated[float, Field(ge=0)],       # column of float64, shape (n,)
        season: Literal["winter", "summer"],        # column of str, shape (n,)
        embedding: Tensor[np.float32, 16],          # shape (n, 16)
        photo: Image[64, 64],                       # uint8, shape (n, 64, 64, 3)
    ) -> float: ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np

_TENSOR_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


@dataclass(frozen=True)
class Field:
    """Constraints on a scalar input, used as ``Annotated[float, Field(ge=0)]``.

    >>> Annotated[float, Field(ge=0, le=1, allow_nan=False)]  # doctest: +SKIP
    """

    ge: float | None = None  # smallest allowed value, inclusive
    le: float | None = None  # largest allowed value, inclusive
    allow_nan: bool = False  # accept NaN and infinities for floats
    description: str = ""  # shown in GET /functions

    def __post_init__(self) -> None:
        for bound in (self.ge, self.le):
            if bound is not None and (not isinstance(bound, (int, float)) or math.isnan(bound)):
                raise TypeError(f"Field bounds must be numbers, got {bound!r}")
        if self.ge is not None and self.le is not None and self.ge > self.le:
            raise TypeError(f"Field(ge={self.ge}, le={self.le}): ge is larger than le")


@dataclass(frozen=True)
class TensorType:
    """A fixed-shape numeric tensor per instance; ``None`` in the shape means any length."""

    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ImageType:
    """An encoded image (JPEG/PNG/...) decoded to uint8 RGB, resized to ``size`` if given."""

    size: tuple[int, int] | None  # (height, width)
    mode: str = "RGB"


class _TensorFactory:
    """``Tensor[np.float32, 16]``, ``Tensor[np.uint8, 28, 28]``, ``Tensor[float, None]`` (any length).

    The dtype is a numpy scalar type, ``float``/``int``/``bool``, or its name as a string.
    """

    def __getitem__(self, params: Any) -> Any:
        if not isinstance(params, tuple):
            params = (params,)
        dtype, *shape = params
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
        if name not in _TENSOR_DTYPES:
            raise TypeError(f"Tensor dtype must be one of {', '.join(_TENSOR_DTYPES)}, got {dtype!r}")
        if len(shape) == 1 and isinstance(shape[0], tuple):
            shape = list(shape[0])
        for dim in shape:
            if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
                raise TypeError(f"Tensor dimensions must be positive ints or None, got {dim!r}")
        return Annotated[np.ndarray, TensorType(name, tuple(shape))]

    def __repr__(self) -> str:
        return "fnserve.Tensor"


class _ImageFactory:
    """``Image`` (any size, not stackable) or ``Image[height, width]`` (resized, stackable)."""

    def __getitem__(self, params: Any) -> Any:
        if not isinstance(params, tuple) or len(params) != 2:
            raise TypeError(f"Image takes [height, width], got {params!r}")
        height, width = params
        for dim in params:
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise TypeError(f"Image dimensions must be positive ints, got {dim!r}")
        return Annotated[np.ndarray, ImageType((height, width))]

    def __repr__(self) -> str:
        return "fnserve.Image"


Tensor: Any = _TensorFactory()
Image: Any = _ImageFactory()
ANY_IMAGE = ImageType(None)

"""Every input rule, with its message, written once.

Two paths check inputs: row by row for query parameters and JSON instances
(:mod:`fnserve.runtime.codec`), and a whole column at a time with numpy for Arrow, v2 tensors
and large JSON batches (:mod:`fnserve.runtime.columns`). Both take the limits and the words of
an error from here, so a bad value reads the same whichever protocol carried it:

    >>> from fnserve.runtime.schema import InputField
    >>> from fnserve.runtime.types import Field
    >>> price = InputField("hotel_price", "float", True, constraint=Field(ge=0))
    >>> outside(price.constraint, -3.0)
    'must be >= 0, got -3.0'
    >>> int64_overflow(1e19)  # a float from a column names the integer it stands for
    '10000000000000000000 does not fit in a 64-bit integer'
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fnserve.runtime.types import Field

if TYPE_CHECKING:
    from fnserve.runtime.schema import InputField, Schema

INT64_MIN, INT64_END = -(2**63), 2**63  # an int64 holds INT64_MIN <= v < INT64_END
EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
NOT_UTF8 = "not valid UTF-8 text"
TENSOR_NOT_FINITE = "expected finite numbers, got NaN or infinity"

# --- the rules ------------------------------------------------------------------------------------


def nan_ok(field: InputField) -> bool:
    """Whether NaN and infinities are accepted (``Field(allow_nan=True)``)."""
    return field.constraint is not None and field.constraint.allow_nan


def bounds(constraint: Field | None) -> tuple[tuple[str, float], ...]:
    """The ``Field`` bounds as ``(">=", ge)`` and ``("<=", le)``, those that are set."""
    if constraint is None:
        return ()
    given = ((">=", constraint.ge), ("<=", constraint.le))
    return tuple((word, limit) for word, limit in given if limit is not None)


def outside(constraint: Field, value: float) -> str:
    """What is wrong with a finite ``value`` outside ``constraint``'s bounds."""
    if constraint.ge is not None and value < constraint.ge:
        return out_of_bounds(">=", constraint.ge, value)
    assert constraint.le is not None and value > constraint.le, "the value is within the bounds"
    return out_of_bounds("<=", constraint.le, value)


@functools.lru_cache(maxsize=16)
def integer_range(dtype: str) -> tuple[int, int]:
    """The smallest and largest value of an integer dtype."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


# --- the messages -------------------------------------------------------------------------------


def missing(field: InputField) -> str:
    return f"missing required input ({field.kind})"


def expected(kind: str, got: str) -> str:
    """``expected an integer, got string 'x'``; ``got`` as :func:`describe` words it."""
    return f"expected {EXPECTED[kind]}, got {got}"


def int64_overflow(value: Any) -> str:
    return f"{int(value)} does not fit in a 64-bit integer"


def not_finite(value: Any) -> str:
    return f"expected a finite number, got {float(value)}"


def out_of_bounds(word: str, limit: float, value: Any) -> str:
    return f"must be {word} {limit}, got {value}"


def not_a_choice(choices: tuple[str, ...], value: Any) -> str:
    return f"expected one of {', '.join(choices)}, got {value!r}"


def shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("*" if d is None else str(d) for d in shape) + "]"


def wrong_shape(field: InputField, got: tuple[int, ...]) -> str:
    return f"expected shape {shape_text(field.shape)}, got {list(got)}"


def not_integral(dtype: str) -> str:
    return f"expected integers ({dtype})"


def out_of_range(dtype: str) -> str:
    low, high = integer_range(dtype)
    return f"expected integers from {low} to {high} ({dtype})"


def too_large(dtype: str) -> str:
    return f"a value is too large for {dtype}"


def unknown(schema: Schema, what: str = "input") -> str:
    return f"unknown {what}; expected {', '.join(f.name for f in schema.inputs)}"


def describe(value: Any) -> str:
    """A JSON value in an error message: its type and (the start of) the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__

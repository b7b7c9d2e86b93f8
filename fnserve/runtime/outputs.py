"""A function's batch result, normalized once so every protocol can slice and encode it.

A function returns one value per instance (an array or list of length n) or, for named
outputs, a mapping of columns (``{"sea_view": array(n), ...}``). ``Outputs`` keeps that
columnar form so a batch can be split between the requests it served without touching each
value, and is turned into JSON, Arrow or Open Inference Protocol tensors at the edge. It also
carries the checkpoint version of the model that computed it: every protocol labels an answer
with that version, never with the one in memory when the request arrived (a swap may come between).

    >>> out = Outputs.of(np.array([0.1, 0.9]), 2, "recs")
    >>> out.slice(1, 2).predictions()
    [0.9]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fnserve.runtime.errors import ModelError, VersionChanged

Column = np.ndarray | list[Any]


@dataclass(frozen=True)
class Outputs:
    n: int
    value: Column | None  # one output per instance, when the function returned a sequence
    named: Mapping[str, Column] | None  # named output columns, when it returned a mapping
    version: int | None = None  # checkpoint version of the model that computed them; None: no checkpoint

    @classmethod
    def of(cls, result: Any, n: int, function: str, version: int | None = None) -> Outputs:
        """Check and normalize what ``function`` (its model at ``version``) returned for a batch of ``n``."""
        if isinstance(result, Mapping):
            named = {str(k): _column(v, n, function, f"output {k!r}") for k, v in result.items()}
            return cls(n, None, named, version)
        return cls(n, _column(result, n, function, "output"), None, version)

    @classmethod
    def concat(cls, parts: Sequence[Outputs]) -> Outputs:
        """One request's parts (computed by separate model calls) as one. They must come from
        one model version: parts from two (a swap between the calls) raise ``VersionChanged``.

        >>> Outputs.concat([Outputs(1, [1], None, 3), Outputs(1, [2], None, 3)])
        Outputs(n=2, value=[1, 2], named=None, version=3)
        """
        if len(parts) == 1:
            return parts[0]
        version = parts[0].version
        other = next((p.version for p in parts if p.version != version), version)
        if other != version:
            raise VersionChanged(
                f"the model changed from version {version} to {other} between the calls that "
                "computed this request; retry"
            )
        n = sum(p.n for p in parts)
        if all(p.named is not None for p in parts):
            keys = list(parts[0].named or {})
            named = {k: concat_column([(p.named or {})[k] for p in parts]) for k in keys}
            return cls(n, None, named, version)
        values = concat_column([p.value if p.value is not None else p.predictions() for p in parts])
        return cls(n, values, None, version)

    def slice(self, start: int, stop: int) -> Outputs:
        if start == 0 and stop == self.n:
            return self
        if self.named is not None:
            named = {k: v[start:stop] for k, v in self.named.items()}
            return Outputs(stop - start, None, named, self.version)
        assert self.value is not None
        return Outputs(stop - start, self.value[start:stop], None, self.version)

    def jsonable(self) -> Any:
        """What to hand orjson: a numeric array as is (serialized natively, float32 as float32),
        else the list of :meth:`predictions`."""
        value = self.value
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.flags.c_contiguous:
            if value.dtype.kind != "f":
                return value
            # One prediction (a GET): math on the scalar costs a fifth of a ufunc reduction.
            finite = math.isfinite(value.item()) if value.size == 1 else bool(np.isfinite(value).all())
            if finite:
                return value
        return self.predictions()

    def predictions(self) -> list[Any]:
        """One JSON-ready prediction per instance, in order."""
        if self.named is not None:
            keys = list(self.named)
            columns = [_json_column(self.named[k]) for k in keys]
            return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]
        assert self.value is not None
        return _json_column(self.value)


def _column(values: Any, n: int, function: str, what: str) -> Column:
    if hasattr(values, "numpy") and not isinstance(values, np.ndarray):  # a framework tensor
        values = np.asarray(values.numpy())
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            raise ModelError(
                f"function {function!r} returned a scalar as {what}; expected one value per instance"
            )
    elif not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        raise ModelError(
            f"function {function!r} returned {type(values).__name__} as {what}; expected a batch"
        )
    if len(values) != n:
        raise ModelError(f"function {function!r} returned {len(values)} values as {what} for {n} instances")
    return values if isinstance(values, np.ndarray) else list(values)


def concat_column(columns: Sequence[Column]) -> Column:
    """Columns of several requests (or outputs) as one: an array when they stack, else a list."""
    arrays = [c for c in columns if isinstance(c, np.ndarray)]
    if len(arrays) == len(columns) and len({a.shape[1:] for a in arrays}) == 1:
        return np.concatenate(arrays)
    return [v for c in columns for v in c]


def _json_column(column: Column) -> list[Any]:
    if isinstance(column, np.ndarray):
        if column.dtype.kind == "f" and not np.isfinite(column).all():
            return [_jsonable(v) for v in column.tolist()]
        return column.tolist()
    return [_jsonable(v) for v in column]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null says "no number" without breaking parsers
    return value

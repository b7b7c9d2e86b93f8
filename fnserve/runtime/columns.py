"""Vectorized validation of whole input columns, for the columnar protocols.

Arrow bodies, Open Inference Protocol tensors and TF Serving's ``inputs`` arrive as one
column per input; checking them value by value in Python would cost more than the model.
Here every rule of :mod:`fnserve.runtime.codec` (types, ``Field`` bounds, NaN, categories,
tensor shapes and dtype ranges) runs as numpy operations over the whole column, and an
error still names the input and the first offending row:

    >>> from fnserve.runtime.schema import InputField
    >>> from fnserve.runtime.types import Field
    >>> price = InputField("hotel_price", "float", True, constraint=Field(ge=0))
    >>> check(price, np.array([120.0, 99.5, -3.0]))
    Traceback (most recent call last):
    ...
    fnserve.runtime.errors.ValidationError: hotel_price[2]: must be >= 0, got -3.0
    >>> from_json(price, [120, 99.5]).dtype
    dtype('float64')

A label may place the row itself: ``"instances[{row}].hotel_price"``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fnserve.runtime import codec
from fnserve.runtime.errors import PayloadTooLarge, ValidationError
from fnserve.runtime.schema import InputField, Schema

MAX_ROWS = 10_000  # most rows one request may carry, whatever its format (413 beyond)
SMALL_BATCH = 8  # fewer JSON instances than this are checked one by one, more column by column
_INT64 = np.iinfo(np.int64)


def at(label: str, row: int) -> str:
    """``x`` -> ``x[3]``; a label with ``{row}`` in it is filled instead."""
    return label.format(row=row) if "{row}" in label else f"{label}[{row}]"


def fail(label: str, row: int, problem: str) -> ValidationError:
    return ValidationError(f"{at(label, row)}: {problem}")


def first(mask: np.ndarray) -> int | None:
    """Index of the first row where ``mask`` (one bool per row) is true, or None."""
    return int(np.argmax(mask)) if mask.any() else None


def rows_mask(mask: np.ndarray) -> np.ndarray:
    """Collapse an elementwise mask of shape (n, ...) to one bool per row."""
    return mask if mask.ndim == 1 else np.asarray(mask.reshape(len(mask), -1).any(axis=1))


def check(field: InputField, column: np.ndarray, label: str | None = None) -> Any:
    """Validate a numpy column (first axis = rows) for ``field``; returns it in the field's dtype.

    Object columns are trusted to hold ``str`` (the decoders that make them check that).
    """
    label = label or field.name
    kind = field.kind
    if kind in ("int", "float"):
        if column.ndim != 1:
            raise fail(label, 0, f"expected one number per row, got shape {list(column.shape[1:])}")
        return _number(field, column, label)
    if kind == "bool":
        if column.dtype.kind != "b":
            raise fail(label, 0, f"expected true or false, got {_dtype(column)}")
        return column.reshape(len(column))
    if kind in ("str", "category"):
        if column.dtype.kind == "U":
            column = column.astype(object)
        elif column.dtype.kind != "O":
            raise fail(label, 0, f"expected a string, got {_dtype(column)}")
        if kind == "category" and not _choice_set(field.choices).issuperset(column.tolist()):
            bad = first(~np.isin(column, field.choices))
            if bad is not None:
                raise fail(label, bad, f"expected one of {', '.join(field.choices)}, got {column[bad]!r}")
        return column
    return _tensor(field, column, label)


@functools.lru_cache(maxsize=256)
def _choice_set(choices: tuple[str, ...]) -> frozenset[str]:
    return frozenset(choices)


def _number(field: InputField, column: np.ndarray, label: str) -> np.ndarray:
    code = column.dtype.kind
    if code not in "iuf":
        raise fail(
            label, 0, f"expected {'an integer' if field.kind == 'int' else 'a number'}, got {_dtype(column)}"
        )
    nan_ok = field.constraint is not None and field.constraint.allow_nan
    if field.kind == "int":
        if code == "f":
            whole = np.isfinite(column) & (np.mod(column, 1) == 0)
            bad = first(~whole)
            if bad is not None:
                raise fail(label, bad, f"expected an integer, got number {float(column[bad])}")
        if code != "i" and column.size:
            bad = first((column < _INT64.min) | (column >= 2.0**63))
            if bad is not None:
                raise fail(label, bad, f"{column[bad]} does not fit in a 64-bit integer")
        column = column.astype(np.int64, copy=False)
    else:
        column = column.astype(np.float64, copy=False)
        if not nan_ok:
            bad = first(~np.isfinite(column))
            if bad is not None:
                raise fail(label, bad, f"expected a finite number, got {float(column[bad])}")
    bounds = field.constraint
    if bounds is not None and (bounds.ge is not None or bounds.le is not None):
        for limit, word, outside in ((bounds.ge, ">=", np.less), (bounds.le, "<=", np.greater)):
            if limit is not None:
                bad = first(outside(column, limit))  # NaN compares false: never out of bounds
                if bad is not None:
                    raise fail(label, bad, f"must be {word} {limit}, got {column[bad].item()}")
    return column


def _tensor(field: InputField, column: np.ndarray, label: str) -> np.ndarray:
    """Tensors and raw image pixels: shape, finiteness, integrality and the dtype's range."""
    want = field.shape
    got = column.shape[1:]
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got, strict=True)):
        shape = "[" + ", ".join("*" if d is None else str(d) for d in want) + "]"
        raise fail(label, 0, f"expected shape {shape}, got {list(got)}")
    target = np.dtype(field.dtype)
    code = column.dtype.kind
    if code not in "biuf" or (code == "b") != (target.kind == "b"):
        raise fail(label, 0, f"expected {target.name} values, got {_dtype(column)}")
    if column.dtype == target:
        if code == "f" and not _nan_ok(field):
            _finite(column, label)
        return column
    if code == "f" and not _nan_ok(field):
        _finite(column, label)
    if target.kind in "iu":
        if code == "f":
            bad = first(rows_mask(np.mod(column, 1) != 0))
            if bad is not None:
                raise fail(label, bad, f"expected integers ({target.name})")
        info = np.iinfo(target)
        if column.size:
            bad = first(rows_mask((column < info.min) | (column >= info.max + 1)))
            if bad is not None:
                raise fail(label, bad, f"expected integers from {info.min} to {info.max} ({target.name})")
    with np.errstate(over="ignore"):
        converted = column.astype(target)
    if target.kind == "f" and not _nan_ok(field):
        bad = first(rows_mask(~np.isfinite(converted)))
        if bad is not None:
            raise fail(label, bad, f"a value is too large for {target.name}")
    return converted


def _finite(column: np.ndarray, label: str) -> None:
    bad = first(rows_mask(~np.isfinite(column)))
    if bad is not None:
        raise fail(label, bad, "expected finite numbers, got NaN or infinity")


def _nan_ok(field: InputField) -> bool:
    return field.constraint is not None and field.constraint.allow_nan


def from_json(field: InputField, values: Sequence[Any], label: str | None = None) -> Any:
    """A JSON list (one value per row) as a checked column; types are checked per list, in C."""
    label = label or field.name
    kind = field.kind
    if kind == "image":
        return images(field, values, label)
    if not isinstance(values, list):
        raise ValidationError(f"{label}: expected a list with one value per row, got {codec._kind(values)}")
    if kind == "tensor":
        return _json_tensor(field, values, label)
    types = set(map(type, values))
    if type(None) in types:
        values = _fill_nulls(field, values, label)
        types = set(map(type, values))
    allowed = {"int": (int, float), "float": (int, float), "bool": (bool,)}.get(kind, (str,))
    if not types <= set(allowed):
        bad = next((i for i, v in enumerate(values) if type(v) not in allowed), 0)
        codec.check_value(field, values[bad], at(label, bad))  # raises the precise message
        raise fail(label, bad, "unexpected value")  # pragma: no cover - check_value raised
    if kind in ("int", "float"):
        try:
            column = np.array(values, dtype=np.int64 if kind == "int" and types <= {int} else np.float64)
        except OverflowError:
            bad = next((i for i, v in enumerate(values) if not _INT64.min <= v <= _INT64.max), 0)
            raise fail(label, bad, f"{values[bad]} does not fit in a 64-bit integer") from None
        return _number(field, column, label)
    column = np.array(values, dtype=bool if kind == "bool" else object)
    return check(field, column, label)


def from_instances(schema: Schema, instances: list[Any]) -> tuple[dict[str, Any], int]:
    """JSON instances (objects of inputs) as checked columns: transposed, then checked per column.

    Errors name the instance: ``instances[3].hotel_price: must be >= 0, got -3.0``.
    """
    if len(instances) < SMALL_BATCH:  # a few rows: checking each value directly is quicker
        rows = [codec.validate_instance(schema, inst, f"instances[{i}].") for i, inst in enumerate(instances)]
        return codec.to_columns(schema, rows), len(rows)
    names = {f.name for f in schema.inputs}
    if set(map(type, instances)) != {dict} or not names.issuperset(itertools.chain.from_iterable(instances)):
        for i, instance in enumerate(instances):  # the error path: name the first culprit
            if not isinstance(instance, dict) or not instance.keys() <= names:
                codec.validate_instance(schema, instance, f"instances[{i}].")
    batch = {}
    for f in schema.inputs:  # dict.get through map: one C loop per input, None where not given
        values = list(map(dict.get, instances, itertools.repeat(f.name)))
        batch[f.name] = from_json(f, values, f"instances[{{row}}].{f.name}")
    return batch, len(instances)


def _fill_nulls(field: InputField, values: list[Any], label: str) -> list[Any]:
    """JSON null means "not given": the default for optional inputs, an error for required ones."""
    if field.required:
        raise fail(label, values.index(None), f"missing required input ({field.kind})")
    return [field.default if v is None else v for v in values]


def _json_tensor(field: InputField, values: list[Any], label: str) -> Any:
    dtype = bool if field.dtype == "bool" else np.float64
    try:
        column = np.array(values, dtype=dtype)
    except (ValueError, TypeError):
        column = None
    if column is None or column.ndim != len(field.shape) + 1:
        # Ragged or not numbers: find the culprit row by row (the error path), or keep a
        # list of arrays when the field's shape is variable.
        rows = [codec.check_value(field, v, at(label, i)) for i, v in enumerate(values)]
        shapes = {r.shape for r in rows}
        return np.stack(rows) if len(shapes) == 1 else rows
    return _tensor(field, column, label)


def images(field: InputField, blobs: Sequence[Any], label: str | None = None) -> Any:
    """Encoded images (bytes, base64 text or ``{"b64": ...}``) decoded and stacked."""
    label = label or field.name
    pixels = [
        codec.decode_image(field, codec.image_bytes(blob, at(label, i)), at(label, i))
        for i, blob in enumerate(blobs)
    ]
    if field.image is not None and field.image.size is not None:
        return np.stack(pixels) if pixels else np.zeros((0, *field.shape), np.uint8)
    return pixels


def default_column(field: InputField, n: int) -> Any:
    if field.kind in ("tensor", "image"):
        return [field.default] * n
    column = np.empty(n, dtype=field.dtype)
    column[:] = field.default
    return column


def complete(schema: Schema, given: Mapping[str, Any], n: int) -> dict[str, Any]:
    """Every input's column in schema order: unknown names refused, defaults filled."""
    for name in given:
        if schema.field(name) is None:
            expected = ", ".join(f.name for f in schema.inputs)
            raise ValidationError(f"{name}: unknown input; expected {expected}")
    columns: dict[str, Any] = {}
    for field in schema.inputs:
        if field.name in given:
            columns[field.name] = given[field.name]
        elif field.required:
            raise ValidationError(f"{field.name}: missing required input ({field.kind})")
        else:
            columns[field.name] = default_column(field, n)
    return columns


def check_rows(n: int, what: str) -> None:
    """Refuse empty requests (422) and ones over :data:`MAX_ROWS` (413)."""
    if n > MAX_ROWS:
        raise PayloadTooLarge(f"{what}: {n} rows is over the limit of {MAX_ROWS}")
    if n < 1:
        raise ValidationError(f"{what}: expected at least one row")


def _dtype(column: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "strings"}.get(
        column.dtype.kind, f"{column.dtype.name} values"
    )

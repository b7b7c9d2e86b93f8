"""Vectorized validation of whole input columns, for the columnar protocols.

Arrow bodies, Open Inference Protocol tensors and TF Serving's ``inputs`` arrive as one
column per input; checking them value by value in Python would cost more than the model.
Here every rule of :mod:`fnserve.runtime.rules` (types, ``Field`` bounds, NaN, categories,
tensor shapes and dtype ranges) runs as numpy operations over the whole column, worded as the
row-by-row checks of :mod:`fnserve.runtime.codec` word it, and an error names the input and
every offending row (the first :data:`~fnserve.runtime.errors.MAX_PROBLEMS` of them):

    >>> from fnserve.runtime.schema import InputField
    >>> from fnserve.runtime.types import Field
    >>> price = InputField("price", "float", True, constraint=Field(ge=0))
    >>> check(price, np.array([120.0, -9.5, 80.0, -3.0]))
    Traceback (most recent call last):
    ...
    fnserve.runtime.errors.ValidationError: price[1]: must be >= 0, got -9.5; price[3]: must be >= 0, got -3.0
    >>> from_json(price, [120, 99.5]).dtype
    dtype('float64')

A label may place the row itself: ``"instances[{row}].hotel_price"``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fnserve.runtime import codec, rules
from fnserve.runtime.errors import MAX_PROBLEMS, PayloadTooLarge, Problem, Problems, ValidationError
from fnserve.runtime.schema import InputField, Schema

MAX_ROWS = 10_000  # most rows one request may carry, whatever its format (413 beyond)
SMALL_BATCH = 8  # fewer JSON instances than this are checked one by one, more column by column


def at(label: str, row: int) -> str:
    """``x`` -> ``x[3]``; a label with ``{row}`` in it is filled instead."""
    return label.format(row=row) if "{row}" in label else f"{label}[{row}]"


def fail(label: str, row: int, problem: str) -> ValidationError:
    where = at(label, row)
    return ValidationError(f"{where}: {problem}", problems=(Problem(where, problem, row),))


def rows_mask(mask: np.ndarray) -> np.ndarray:
    """Collapse an elementwise mask of shape (n, ...) to one bool per row."""
    return mask if mask.ndim == 1 else np.asarray(mask.reshape(len(mask), -1).any(axis=1))


class BadRows:
    """The rows of one column that break a rule, each named once, for the first rule it breaks.

    While every row is good, :meth:`flag` costs one ``mask.any()``. Once some are bad, later
    rules see only the other rows (:meth:`clean` makes the bad ones harmless for casts), and
    :meth:`raise_any` names them all in one error.
    """

    __slots__ = ("count", "found", "label", "taken")

    def __init__(self, label: str):
        self.label = label
        self.taken: np.ndarray | None = None  # one bool per row: already named
        self.found: list[Problem] = []
        self.count = 0

    def flag(self, mask: np.ndarray, message: Callable[[int], str]) -> None:
        """Rows where ``mask`` (one bool per row) holds break a rule; ``message(row)`` words it."""
        if self.taken is not None:
            mask = mask & ~self.taken
        if not mask.any():
            return
        self.taken = mask if self.taken is None else self.taken | mask
        rows = np.flatnonzero(mask)
        self.count += len(rows)
        for row in rows[:MAX_PROBLEMS].tolist():  # each rule's first rows hold the column's first
            self.found.append(Problem(at(self.label, row), message(row), row))

    def clean(self, column: np.ndarray) -> np.ndarray:
        """``column`` with the rows named so far set to 0 (NaN would not cast to an integer)."""
        if self.taken is None:
            return column
        return np.where(self.taken.reshape(-1, *(1,) * (column.ndim - 1)), 0, column)

    def raise_any(self) -> None:
        if self.count:
            raise ValidationError.of(sorted(self.found, key=_row), self.count)


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
            raise fail(label, 0, rules.expected(kind, _dtype(column)))
        return column.reshape(len(column))
    if kind in ("str", "category"):
        if column.dtype.kind == "U":
            column = column.astype(object)
        elif column.dtype.kind != "O":
            raise fail(label, 0, rules.expected("str", _dtype(column)))
        if kind == "category" and not _choice_set(field.choices).issuperset(column.tolist()):
            bad = BadRows(label)
            bad.flag(~np.isin(column, field.choices), functools.partial(_not_a_choice, field, column))
            bad.raise_any()
        return column
    return _tensor(field, column, label)


@functools.lru_cache(maxsize=256)
def _choice_set(choices: tuple[str, ...]) -> frozenset[str]:
    return frozenset(choices)


def _number(field: InputField, column: np.ndarray, label: str) -> np.ndarray:
    code = column.dtype.kind
    if code not in "iuf":
        raise fail(label, 0, rules.expected(field.kind, _dtype(column)))
    bad = BadRows(label)
    if field.kind == "int":
        if code == "f":
            column = column.astype(np.float64, copy=False)  # float16 cannot even hold the limits
            with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not whole, as it should be
                whole = np.isfinite(column) & (np.mod(column, 1) == 0)
            bad.flag(~whole, lambda row: rules.expected("int", rules.describe(float(column[row]))))
            outside = (column < rules.INT64_MIN) | (column >= rules.INT64_END)  # exact in float64
            bad.flag(outside, lambda row: rules.int64_overflow(column[row]))
        elif code == "u":
            bad.flag(column >= rules.INT64_END, lambda row: rules.int64_overflow(column[row]))
        column = bad.clean(column).astype(np.int64, copy=False)
    else:
        column = column.astype(np.float64, copy=False)
        if not rules.nan_ok(field):
            bad.flag(~np.isfinite(column), lambda row: rules.not_finite(column[row]))
    for word, limit in rules.bounds(field.constraint):
        outside = (np.less if word == ">=" else np.greater)(column, limit)  # NaN is never outside
        bad.flag(outside, functools.partial(_out_of_bounds, word, limit, column))
    bad.raise_any()
    return column


def _out_of_bounds(word: str, limit: float, column: np.ndarray, row: int) -> str:
    return rules.out_of_bounds(word, limit, column[row].item())


def _not_a_choice(field: InputField, column: np.ndarray, row: int) -> str:
    return rules.not_a_choice(field.choices, column[row])


def _tensor(field: InputField, column: np.ndarray, label: str) -> np.ndarray:
    """Tensors and raw image pixels: shape, finiteness, integrality and the dtype's range."""
    want = field.shape
    got = column.shape[1:]
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got, strict=True)):
        raise fail(label, 0, rules.wrong_shape(field, got))
    target = np.dtype(field.dtype)
    code = column.dtype.kind
    if code not in "biuf" or (code == "b") != (target.kind == "b"):
        raise fail(label, 0, f"expected {target.name} values, got {_dtype(column)}")
    bad = BadRows(label)
    nan_ok = rules.nan_ok(field)
    if code == "f" and not nan_ok:
        bad.flag(rows_mask(~np.isfinite(column)), lambda _: rules.TENSOR_NOT_FINITE)
    if column.dtype == target:
        bad.raise_any()
        return column
    if target.kind in "iu":
        column = bad.clean(column)
        if code == "f":
            with np.errstate(invalid="ignore"):  # NaN (allowed) % 1 is NaN: not whole
                fraction = np.mod(column, 1) != 0
            bad.flag(rows_mask(fraction), lambda _: rules.not_integral(target.name))
        low, high = rules.integer_range(target.name)
        if column.size:
            outside = (column < low) | (column >= high + 1)  # `>= high + 1`: exact for float64
            bad.flag(rows_mask(outside), lambda _: rules.out_of_range(target.name))
        column = bad.clean(column)
    with np.errstate(over="ignore"):
        converted = column.astype(target)
    if target.kind == "f" and not nan_ok:
        bad.flag(rows_mask(~np.isfinite(converted)), lambda _: rules.too_large(target.name))
    bad.raise_any()
    return converted


def from_json(field: InputField, values: Sequence[Any], label: str | None = None) -> Any:
    """A JSON list (one value per row) as a checked column; types are checked per list, in C."""
    label = label or field.name
    kind = field.kind
    if kind == "image":
        return images(field, values, label)
    if not isinstance(values, list):
        got = rules.describe(values)
        raise ValidationError.at(label, f"expected a list with one value per row, got {got}")
    if kind == "tensor":
        return _json_tensor(field, values, label)
    types = set(map(type, values))
    if type(None) in types:  # JSON null means "not given": the default, or missing if required
        if field.required:
            raise _row_problems(field, values, label)
        values = [field.default if v is None else v for v in values]
        types = set(map(type, values))
    allowed = {"int": (int, float), "float": (int, float), "bool": (bool,)}.get(kind, (str,))
    if not types <= set(allowed):
        raise _row_problems(field, values, label)
    if kind in ("int", "float"):
        try:
            column = np.array(values, dtype=np.int64 if kind == "int" and types <= {int} else np.float64)
        except OverflowError:
            raise _row_problems(field, values, label) from None
        return _number(field, column, label)
    column = np.array(values, dtype=bool if kind == "bool" else object)
    return check(field, column, label)


def from_instances(schema: Schema, instances: list[Any]) -> tuple[dict[str, Any], int]:
    """JSON instances (objects of inputs) as checked columns: transposed, then checked per column.

    Errors name the instance: ``instances[3].hotel_price: must be >= 0, got -3.0``.
    """
    if len(instances) < SMALL_BATCH:  # a few rows: checking each value directly is quicker
        try:
            rows = [
                codec.validate_instance(schema, inst, f"instances[{i}].") for i, inst in enumerate(instances)
            ]
        except ValidationError:
            raise _instance_problems(schema, instances) from None
        optional = [f.name for f in schema.inputs if not f.required]
        filled = {name: sum(i.get(name) is None for i in instances) for name in optional}
        return codec.Columns(codec.to_columns(schema, rows), filled), len(rows)
    names = {f.name for f in schema.inputs}
    if set(map(type, instances)) != {dict} or not names.issuperset(itertools.chain.from_iterable(instances)):
        raise _instance_problems(schema, instances)  # not objects, or unknown inputs: row by row
    batch, failed = codec.Columns({}), []
    defaulted: dict[str, int] = {}
    for f in schema.inputs:  # dict.get through map: one C loop per input, None where not given
        values = list(map(dict.get, instances, itertools.repeat(f.name)))
        if not f.required:
            defaulted[f.name] = values.count(None)  # one more C loop, for the monitor
        try:
            batch[f.name] = from_json(f, values, f"instances[{{row}}].{f.name}")
        except ValidationError as exc:
            failed.append(exc)
    if failed:
        raise _row_by_row(failed)
    batch.defaulted = defaulted
    return batch, len(instances)


def _row_by_row(errors: list[ValidationError]) -> ValidationError:
    """Several columns' errors as one, named row by row as the per-instance path names them
    (each column names its first bad rows, so they hold the batch's first problems)."""
    found = sorted((p for e in errors for p in e.problems), key=_row)
    return ValidationError.of(found, sum(e.count for e in errors))


def _row(problem: Problem) -> int:
    return -1 if problem.row is None else problem.row  # a whole column's problem first


def _instance_problems(schema: Schema, instances: list[Any]) -> ValidationError:
    """Every problem of every instance, checked one by one (the error path)."""
    problems = Problems()
    for i, instance in enumerate(instances):
        with problems:
            codec.validate_instance(schema, instance, f"instances[{i}].")
    return problems.error()


def _row_problems(field: InputField, values: list[Any], label: str) -> ValidationError:
    """Every bad value of a JSON list, checked one by one (the error path: mixed types)."""
    problems = Problems()
    for row, value in enumerate(values):
        with problems.at_row(row):
            codec.checked_or_default(field, value, at(label, row))
    return problems.error()


def _json_tensor(field: InputField, values: list[Any], label: str) -> Any:
    dtype = bool if field.dtype == "bool" else np.float64
    try:
        column = np.array(values, dtype=dtype)
    except (ValueError, TypeError):
        column = None
    if column is None or column.ndim != len(field.shape) + 1:
        # Ragged or not numbers: find the culprit row by row (the error path), or keep a
        # list of arrays when the field's shape is variable.
        rows, problems = [], Problems()
        for i, value in enumerate(values):
            with problems.at_row(i):
                rows.append(codec.check_value(field, value, at(label, i)))
        problems.raise_any()
        shapes = {r.shape for r in rows}
        return np.stack(rows) if len(shapes) == 1 else rows
    return _tensor(field, column, label)


def images(field: InputField, blobs: Sequence[Any], label: str | None = None) -> Any:
    """Encoded images (bytes, base64 text or ``{"b64": ...}``) decoded and stacked."""
    label = label or field.name
    pixels, problems = [], Problems()
    for i, blob in enumerate(blobs):
        with problems.at_row(i):
            pixels.append(codec.decode_image(field, codec.image_bytes(blob, at(label, i)), at(label, i)))
    problems.raise_any()
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
    """Every input's column in schema order: unknown names refused, defaults filled (one error
    naming every unknown and missing input)."""
    found = [Problem(name, rules.unknown(schema)) for name in given if schema.field(name) is None]
    columns = codec.Columns({})
    defaulted: dict[str, int] = {}
    for field in schema.inputs:
        if field.name in given:
            columns[field.name] = given[field.name]
        elif field.required:
            found.append(Problem(field.name, rules.missing(field)))
        else:
            columns[field.name] = default_column(field, n)
            defaulted[field.name] = n
    columns.defaulted = defaulted
    if found:
        raise ValidationError.of(found, len(found))
    return columns


def check_rows(n: int, what: str) -> None:
    """Refuse empty requests (422) and ones over :data:`MAX_ROWS` (413)."""
    if n > MAX_ROWS:
        raise PayloadTooLarge(f"{what}: {n} rows is over the limit of {MAX_ROWS}")
    if n < 1:
        raise ValidationError.at(what, "expected at least one row")


def _dtype(column: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "strings"}.get(
        column.dtype.kind, f"{column.dtype.name} values"
    )

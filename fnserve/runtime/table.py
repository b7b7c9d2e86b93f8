"""Precomputed answers: ``fnserve-table.parquet`` of a version, as an in-memory lookup table.

``fn precompute`` runs a version's model over a table of inputs and publishes a new version
holding the result; a runtime serving that version answers the rows it holds from memory,
without calling the model. The file has one column per input (by input name, in the schema's
types) and one per output, named ``out.prediction`` (one output per instance) or ``out.<key>``
(a dict output); its schema metadata (``fnserve.table``) says how each output column turns back
into exactly what the model returned: a numeric array (its dtype and per-row shape kept, so
float32 stays float32 in every protocol) or JSON values (what a function returns as lists).

A request's inputs are looked up by their canonical form (:func:`canonical_keys`): the checked
Python values of the schema's types, the same whether a query string, JSON, Arrow, the Open
Inference Protocol or TF Serving's REST API delivered them.

    # functions/recs/function.toml
    [table]
    strict = true     # a row the table does not hold: 404 naming its inputs (default: the model answers)

>>> from fnserve.runtime.schema import InputField
>>> fields = (InputField("day", "int", True), InputField("price", "float", True))
>>> canonical_keys(fields, Rows([{"day": 3, "price": 2}]), 1)
[(3, 2.0)]
>>> canonical_keys(fields, {"day": np.array([3, 4]), "price": np.array([2.0, 0.5])}, 2)
[(3, 2.0), (4, 0.5)]
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from fnserve.runtime.codec import Inputs, Rows
from fnserve.runtime.columns import check as check_column
from fnserve.runtime.config import function_section
from fnserve.runtime.errors import ConfigError, FnError, ModelError, ValidationError
from fnserve.runtime.outputs import Outputs, _jsonable
from fnserve.runtime.schema import InputField, Schema

log = logging.getLogger("fnserve.table")

TABLE_FILE = "fnserve-table.parquet"
METADATA_KEY = b"fnserve.table"
OUTPUT_PREFIX = "out."  # never an input's name: inputs are Python identifiers
VALUE_OUTPUT = "prediction"  # the column of a function returning one value per instance
SCALAR_KINDS = frozenset({"int", "float", "str", "bool", "category"})
SECTION = "table"

Key = tuple[Any, ...]
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "category": str,
}
_NUMPY_KIND = {"int": "i", "float": "f", "bool": "b", "str": "O", "category": "O"}


class TableError(FnError):
    """A lookup table that does not fit the function (or cannot be read)."""

    status = 422


@dataclass(frozen=True)
class TableConfig:
    """``[table]`` of a function's ``function.toml``."""

    strict: bool = False  # a row the table does not hold is a 404, not a model call

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, where: str) -> TableConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{where} has unknown key {key!r}; known: {', '.join(sorted(known))}")
            if not isinstance(value, bool):
                raise ConfigError(f"{where} {key} must be true or false, got {value!r}")
        return cls(**table)

    @classmethod
    def of_function(cls, predict_file: Path) -> TableConfig:
        table, where = function_section(predict_file, SECTION)
        return cls.from_table(table, where=where)


def canonical_keys(fields: Sequence[InputField], columns: Inputs, n: int) -> list[Key]:
    """Each row's inputs as one hashable tuple of Python values typed as the schema types them.

    Validation made every value its field's type already (an int input is an ``int`` or an
    int64 column, a float input a ``float`` or a float64 column); a default written as ``2``
    for a float input is the one value still to convert. Tensors and images (result cache only)
    key by their dtype, shape and bytes.
    """
    return Canonical(fields).keys(columns, n)


class Canonical:
    """:func:`canonical_keys` for one schema's inputs, with what it needs worked out once."""

    __slots__ = ("fields", "names", "types")

    def __init__(self, fields: Sequence[InputField]):
        self.fields = tuple(fields)
        self.names = tuple(f.name for f in fields)
        self.types = tuple(_CONVERT.get(f.kind) for f in fields)

    def keys(self, columns: Inputs, n: int) -> list[Key]:
        if isinstance(columns, Rows):
            return [self.row_key(row) for row in columns]
        parts = [_column_values(f, columns[f.name], n) for f in self.fields]
        return list(zip(*parts, strict=True))

    def row_key(self, row: Mapping[str, Any]) -> Key:
        values = tuple(map(row.__getitem__, self.names))
        if tuple(map(type, values)) == self.types:  # the usual case: checked values, as they are
            return values
        return tuple(_scalar(f, v) for f, v in zip(self.fields, values, strict=True))


def _scalar(field: InputField, value: Any) -> Any:
    convert = _CONVERT.get(field.kind)
    if convert is None:
        return _array_key(value)
    return value if type(value) is convert else convert(value)


def _column_values(field: InputField, column: Any, n: int) -> list[Any]:
    convert = _CONVERT.get(field.kind)
    if convert is None:
        return [_array_key(v) for v in column]
    if isinstance(column, np.ndarray) and column.dtype.kind == _NUMPY_KIND[field.kind]:
        values: list[Any] = column.tolist()  # int64 -> int, float64 -> float, bool -> bool, str as is
        return values
    return [v if type(v) is convert else convert(v) for v in column]


def _array_key(value: Any) -> Any:
    array = np.ascontiguousarray(value)
    return (array.dtype.str, array.shape, array.tobytes())


# ---- the file ---------------------------------------------------------------------------------


def check_tabular(schema: Schema, what: str) -> None:
    """Only scalar inputs can be looked up in a table: tensors and images are refused by name."""
    other = [f"{f.name} ({f.kind})" for f in schema.inputs if f.kind not in SCALAR_KINDS]
    if other:
        raise TableError(f"{what}: a lookup table needs scalar inputs; not {', '.join(other)}")


def write_table(path: Path, schema: Schema, columns: Mapping[str, Any], outputs: Outputs) -> int:
    """Write inputs and the outputs computed for them as ``path``; returns its size in bytes."""
    check_tabular(schema, "precompute")
    arrays: dict[str, pa.Array] = {}
    for field in schema.inputs:
        arrays[field.name] = pa.array(_input_column(field, columns[field.name]), type=_arrow_type(field))
    described = []
    if outputs.named is not None:
        named: Mapping[str, Any] = outputs.named
        form = "named"
    else:
        assert outputs.value is not None
        named, form = {VALUE_OUTPUT: outputs.value}, "value"
    for key, column in named.items():
        array, description = _encode_output(column)
        arrays[OUTPUT_PREFIX + key] = array
        described.append({"key": key, **description})
    metadata = {"form": form, "outputs": described, "inputs": [f.name for f in schema.inputs]}
    table = pa.table(arrays).replace_schema_metadata({METADATA_KEY: orjson.dumps(metadata)})
    pq.write_table(table, path)
    return path.stat().st_size


def _arrow_type(field: InputField) -> pa.DataType:
    return {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}.get(field.kind, pa.string())


def _input_column(field: InputField, column: Any) -> Any:
    if isinstance(column, np.ndarray) and column.dtype != object:
        return column
    return [_scalar(field, v) for v in column]


def _encode_output(column: Any) -> tuple[pa.Array, dict[str, Any]]:
    """An output column as Arrow, and what it takes to read it back as the model returned it."""
    if isinstance(column, np.ndarray) and column.dtype.kind in "biuf":
        flat: pa.Array = pa.array(np.ascontiguousarray(column).reshape(-1))
        for size in reversed(column.shape[1:]):
            flat = pa.FixedSizeListArray.from_arrays(flat, size)
        return flat, {"encoding": "array", "dtype": column.dtype.str, "shape": list(column.shape[1:])}
    texts = [orjson.dumps(_jsonable(v), option=orjson.OPT_SERIALIZE_NUMPY).decode() for v in column]
    return pa.array(texts, type=pa.string()), {"encoding": "json"}


@dataclass(frozen=True)
class LookupTable:
    """The rows of one version's table: ``index`` maps canonical inputs to a row of the outputs."""

    version: int | None
    index: dict[Key, int]
    form: str  # "value": one output per instance; "named": a dict of output columns
    outputs: dict[str, Any]  # output key -> a numpy array (rows first) or a list of JSON values
    # Every row passes the serving function's input checks (one written before a bound was
    # tightened may not): only then may a hit skip them (Shortcuts.query_hit).
    checked: bool = False
    # Rows' JSON answer bodies, each encoded the first time a GET asks for it (at most one per
    # row: a share of the table's own size). Filled on the event loop only.
    bodies: dict[int, bytes] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def rows(self) -> int:
        return len(self.index)

    def row(self, row: int) -> Outputs:
        """The outputs of one table row (the hot path of a single-instance request)."""
        if self.form == "value":
            return Outputs(1, self.outputs[VALUE_OUTPUT][row : row + 1], None, self.version)
        return Outputs(1, None, {k: c[row : row + 1] for k, c in self.outputs.items()}, self.version)

    def take(self, rows: Sequence[int]) -> Outputs:
        """The outputs of these table rows, in this order, labelled with the table's version."""
        if len(rows) == 1:
            row = rows[0]
            picked = {k: c[row : row + 1] for k, c in self.outputs.items()}
        else:
            picked = {
                k: c[np.asarray(rows)] if isinstance(c, np.ndarray) else [c[r] for r in rows]
                for k, c in self.outputs.items()
            }
        if self.form == "value":
            return Outputs(len(rows), picked[VALUE_OUTPUT], None, self.version)
        return Outputs(len(rows), None, picked, self.version)

    @classmethod
    def read(cls, path: Path, schema: Schema, version: int | None) -> LookupTable:
        """Read and check a table file against the function serving it (TableError naming why)."""
        where = f"{TABLE_FILE} of version {version}"
        check_tabular(schema, where)
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise TableError(f"{where} cannot be read: {exc}") from None
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise TableError(
                f"{where} has no {METADATA_KEY.decode()} metadata (not written by fn precompute)"
            )
        metadata = orjson.loads(raw)
        names = [f.name for f in schema.inputs]
        given = [c for c in table.column_names if not c.startswith(OUTPUT_PREFIX)]
        missing, extra = sorted(set(names) - set(given)), sorted(set(given) - set(names))
        if missing or extra:
            raise TableError(
                f"{where} does not match the function's inputs: missing {missing or 'none'}, "
                f"unexpected {extra or 'none'}"
            )
        outputs = {
            spec["key"]: _decode_output(table.column(OUTPUT_PREFIX + spec["key"]), spec)
            for spec in metadata["outputs"]
        }
        inputs = {f.name: table.column(f.name).to_numpy(zero_copy_only=False) for f in schema.inputs}
        keys = canonical_keys(schema.inputs, inputs, table.num_rows)
        index: dict[Key, int] = {}
        for row, key in enumerate(keys):
            index.setdefault(key, row)  # a repeated row: its first answer
        return cls(version, index, metadata["form"], outputs, _rows_pass(schema, inputs, where))


def _rows_pass(schema: Schema, inputs: Mapping[str, np.ndarray], where: str) -> bool:
    """Whether every row of the table passes the function's input checks as they are now."""
    try:
        for field in schema.inputs:
            check_column(field, inputs[field.name])
    except ValidationError as exc:
        log.warning("%s: rows the function's checks now refuse (%s); each hit is checked", where, exc.message)
        return False
    return True


def _decode_output(chunked: pa.ChunkedArray, spec: Mapping[str, Any]) -> Any:
    array = chunked.combine_chunks()
    if spec["encoding"] == "json":
        return [orjson.loads(text) for text in array.to_pylist()]
    shape = tuple(spec["shape"])
    values = array
    for _ in shape:
        values = values.flatten()
    flat = values.to_numpy(zero_copy_only=False).astype(np.dtype(spec["dtype"]), copy=False)
    return flat.reshape((len(array), *shape))


def merge(n: int, parts: Sequence[tuple[Sequence[int], Outputs]], version: int | None) -> Outputs:
    """One request's outputs in its own order, from parts that each answered some of its rows
    (``positions``: where each part's rows go). Parts of different shapes (the model answered
    in another form than the table holds) raise ModelError: never a half-and-half answer."""
    parts = [p for p in parts if len(p[0])]
    if len(parts) == 1 and list(parts[0][0]) == list(range(n)):
        return parts[0][1]
    forms = {p.named is not None for _, p in parts}
    if len(forms) != 1:
        raise ModelError("the table's outputs and the model's differ in form")
    if forms == {True}:
        keys = list(parts[0][1].named or {})
        if any(list(p.named or {}) != keys for _, p in parts):
            raise ModelError("the table's output keys and the model's differ")
        named = {k: _scatter(n, [(pos, (p.named or {})[k]) for pos, p in parts]) for k in keys}
        return Outputs(n, None, named, version)
    return Outputs(n, _scatter(n, [(pos, p.value) for pos, p in parts]), None, version)


def _scatter(n: int, parts: Sequence[tuple[Sequence[int], Any]]) -> Any:
    columns = [c for _, c in parts]
    arrays = [c for c in columns if isinstance(c, np.ndarray)]
    if len(arrays) == len(columns) and len({(a.dtype, a.shape[1:]) for a in arrays}) == 1:
        out = np.empty((n, *arrays[0].shape[1:]), dtype=arrays[0].dtype)
        for positions, column in parts:
            out[np.asarray(positions)] = column
        return out
    merged: list[Any] = [None] * n
    for positions, column in parts:
        values = column.tolist() if isinstance(column, np.ndarray) else column
        for position, value in zip(positions, values, strict=True):
            merged[position] = value
    return merged

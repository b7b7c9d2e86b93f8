"""The input's columns against the function's inputs: refused before any row is scored.

Every problem is named in one message: required inputs the input lacks, columns the function does
not take (carry them with ``--key``, leave them out with ``--ignore``), key columns it lacks, and
columns whose Arrow type the function cannot take — judged by the runtime's own Arrow decoder
(:func:`fnserve.runtime.protocols.arrow.from_arrow`) on an empty column of that type, so the batch
job refuses exactly what an Arrow request would. Text formats (CSV, JSON lines) have no column
types: their values are checked row by row, and a bad one is a bad row.

>>> from fnserve.runtime.schema import InputField, OutputSpec
>>> fields = (InputField("price", "float", True), InputField("day", "int", False, 1))
>>> found = {"price": pa.string(), "prce": pa.float64()}
>>> check_columns(Schema(fields, OutputSpec("float")), found, keys=(), ignore=(), what="rows.parquet")
Traceback (most recent call last):
...
fnserve.batch.BatchError: rows.parquet does not fit the function's inputs (price, day): \
column price: expected an Arrow column of a number, got string; \
column prce is not an input (carry it into the output with --key prce, or leave it out with --ignore prce)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from fnserve.batch import BatchError
from fnserve.runtime.errors import ValidationError
from fnserve.runtime.protocols.arrow import from_arrow
from fnserve.runtime.schema import InputField, OutputSpec, Schema
from fnserve.runtime.types import ANY_IMAGE, Field, ImageType, TensorType

RESERVED = ("row", "version")  # the output's own columns: each row's number and its model's version


def check_columns(
    schema: Schema,
    found: Mapping[str, pa.DataType | None],
    *,
    keys: Sequence[str],
    ignore: Sequence[str],
    what: str,
) -> None:
    """A BatchError naming every way the input's columns (``found``: name -> Arrow type, None for
    text) do not fit the function's inputs, the keys and the ignored columns."""
    names = [f.name for f in schema.inputs]
    problems = [
        f"input {f.name} is missing (it is required)"
        for f in schema.inputs
        if f.required and f.name not in found
    ]
    for field in schema.inputs:
        arrow_type = found.get(field.name)
        if arrow_type is not None and (problem := type_problem(field, arrow_type)):
            problems.append(f"column {field.name}: {problem}")
    for name in found:
        if name not in names and name not in keys and name not in ignore:
            problems.append(
                f"column {name} is not an input (carry it into the output with --key {name}, "
                f"or leave it out with --ignore {name})"
            )
    problems += [f"key column {k} is not in the input" for k in keys if k not in found]
    problems += [f"--ignore {n}: it is an input of the function" for n in ignore if n in names]
    problems += [f"--ignore {n}: there is no such column" for n in ignore if n not in found]
    problems += [
        f"key column {k} has the name of the output's own column {k!r}" for k in keys if k in RESERVED
    ]
    if problems:
        raise BatchError(
            f"{what} does not fit the function's inputs ({', '.join(names)}): {'; '.join(problems)}"
        )


def type_problem(field: InputField, arrow_type: pa.DataType) -> str | None:
    """Why a column of ``arrow_type`` cannot be ``field``, by the runtime's Arrow decoder; None if it can."""
    if field.kind in ("tensor", "image") and (
        pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    ):
        return None  # a variable-length list: its rows' shapes are checked row by row
    try:
        from_arrow(field, pa.array([], type=arrow_type))
    except ValidationError as exc:
        return exc.problems[0].error if exc.problems else exc.message
    return None


def check_outputs(names: Sequence[str], keys: Sequence[str]) -> None:
    """The function's output columns must not take the name of a key or of the output's own columns."""
    clash = [n for n in names if n in RESERVED or n in keys]
    if clash:
        raise BatchError(
            f"the function's output {', '.join(map(repr, clash))} has the name of a key or of the "
            f"output's own columns ({', '.join(RESERVED)}); rename the output or choose other --key columns"
        )


def served_schema(described: Mapping[str, Any]) -> Schema:
    """A function's schema from its ``GET /functions`` entry (the inverse of ``Schema.describe``),
    so a job against a server checks and types its input as the server will."""
    fields = []
    for d in described["inputs"]:
        kind, shape = d["type"], tuple(d.get("shape") or ())
        bounds = {k: d[k] for k in ("ge", "le") if d.get(k) is not None}
        constraint = None
        if bounds or d.get("allow_nan") or d.get("description"):
            constraint = Field(
                **bounds, allow_nan=bool(d.get("allow_nan")), description=d.get("description", "")
            )
        image = None
        if kind == "image":
            image = ImageType((shape[0], shape[1])) if shape and shape[0] is not None else ANY_IMAGE
        fields.append(
            InputField(
                d["name"],
                kind,
                bool(d["required"]),
                d.get("default"),
                choices=tuple(d.get("choices") or ()),
                tensor=TensorType(d["dtype"], shape) if kind == "tensor" else None,
                image=image,
                constraint=constraint,
            )
        )
    output = described.get("output") or {"type": "any"}
    tensor = TensorType(output["dtype"], tuple(output["shape"])) if output.get("type") == "tensor" else None
    return Schema(tuple(fields), OutputSpec(output["type"], tensor))

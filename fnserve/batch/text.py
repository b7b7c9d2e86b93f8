"""CSV cells to typed columns, by the runtime's own rules for text values.

A CSV holds text: every cell of an input column is read as a string (so one bad cell is one bad
row, never a failed block) and typed here as the runtime types a query parameter
(:func:`fnserve.runtime.codec.from_text`, then :func:`~fnserve.runtime.codec.check_value`).
Numbers go through one pyarrow cast per column; only where it fails are the cells checked one by
one, to name the bad ones. Booleans (``true``/``false``, ``1``/``0``, ``yes``/``no``) and tensors
(``1.5,2,3``) are read cell by cell. An empty cell is a missing value for numbers, booleans and
tensors (the input's default, or a bad row if it is required); text inputs keep it as ``""``.

>>> from fnserve.runtime.schema import InputField
>>> batch = pa.record_batch({"price": ["120", "", "abc"], "id": ["a", "b", "c"]})
>>> typed, bad = type_cells([InputField("price", "float", True)], batch)
>>> typed.column("price").to_pylist(), bad
([120.0, None, None], {2: "price: expected a number, got 'abc'"})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fnserve.runtime import codec
from fnserve.runtime.errors import ValidationError
from fnserve.runtime.schema import InputField

_ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "tensor": pa.list_(pa.float64()),
}


def type_cells(fields: Sequence[InputField], batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[int, str]]:
    """``batch`` with each of ``fields``' text columns typed; the bad cells' rows (position in the
    batch) with what is wrong with them. A bad cell is left null: its row is not scored."""
    bad: dict[int, str] = {}
    columns = dict(zip(batch.schema.names, batch.columns, strict=True))
    for field in fields:
        target = _ARROW_TYPES.get(field.kind)
        if target is None or field.name not in columns:
            continue  # text inputs (str, Literal, base64 images) are text already
        cells = columns[field.name]
        cells = pc.if_else(pc.equal(cells, ""), pa.scalar(None, cells.type), cells)  # empty: not given
        if field.kind in ("int", "float"):
            try:
                columns[field.name] = pc.cast(cells, target)
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # some cell is not a number: find which, by the runtime's rule
        columns[field.name] = _cell_by_cell(field, cells, target, bad)
    return pa.RecordBatch.from_pydict(columns), bad


def _cell_by_cell(field: InputField, cells: pa.Array, target: pa.DataType, bad: dict[int, str]) -> pa.Array:
    values: list[Any] = []
    for row, text in enumerate(cells.to_pylist()):
        value = None
        if text is not None:
            try:
                value = codec.check_value(field, codec.from_text(field, text), field.name)
            except ValidationError as exc:
                bad.setdefault(row, exc.message)
        values.append(value.tolist() if isinstance(value, np.ndarray) else value)
    return pa.array(values, type=target)

"""One batch of input rows: validated by the runtime's decoders, keyed, sliced, sent.

Arrow, Parquet and (once typed) CSV rows are an Arrow record batch, validated exactly as an Arrow
request body is (:func:`fnserve.runtime.protocols.arrow.decode_table`); JSON lines are JSON
objects, validated as the instances of a JSON request are
(:func:`fnserve.runtime.columns.from_instances`). Either way a batch knows each row's number in
the input, its key columns, and how to describe its bad rows for the error output:
``row``, the keys, ``error`` and ``input`` (the row's inputs as JSON text).

>>> from fnserve.batch.source import PartInfo, Piece
>>> from fnserve.runtime.schema import InputField, OutputSpec
>>> schema = Schema((InputField("x", "float", True),), OutputSpec("float"))
>>> piece = Piece(PartInfo(0, "part-00000-000000", 0, None), 7, [b'{"x": 1.5, "id": 3}', b"{oops"])
>>> rows, bad = rows_of(piece, "jsonl", schema, ("id",), frozenset({"id"}))
>>> rows.ids.tolist(), rows.instances(), bad.column("row").to_pylist(), bad.column("error").to_pylist()
([7], [{'x': 1.5}], [8], ['not valid JSON: unexpected character...'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from fnserve.batch.source import Piece
from fnserve.batch.text import type_cells
from fnserve.client.arrow import ARROW_STREAM_TYPE, arrow_call
from fnserve.client.core import Call, encode_json, function_path
from fnserve.runtime import columns as checks
from fnserve.runtime.protocols.arrow import decode_table
from fnserve.runtime.schema import Schema

ROW, ERROR, INPUT = "row", "error", "input"  # the error output's own columns (beside the keys)


@dataclass(frozen=True)
class ArrowRows:
    """Rows as Arrow columns: the inputs (those present) and the keys."""

    batch: pa.RecordBatch
    ids: np.ndarray  # each row's number in the input (int64)
    inputs: tuple[str, ...]
    keys: tuple[str, ...]

    @property
    def n(self) -> int:
        return self.batch.num_rows

    def decode(self, schema: Schema) -> tuple[dict[str, Any], int]:
        """The checked input columns, as a served function receives them; a ValidationError
        naming every bad row (the first of them) otherwise."""
        return decode_table(schema, pa.Table.from_batches([self.batch.select(list(self.inputs))]))

    def take(self, positions: Sequence[int]) -> ArrowRows:
        picked = pa.array(positions, pa.int64())
        return ArrowRows(self.batch.take(picked), self.ids[list(positions)], self.inputs, self.keys)

    def key_columns(self) -> list[pa.Array]:
        return [self.batch.column(k) for k in self.keys]

    def call(self, target: str) -> Call:
        """The HTTP request scoring these rows: an Arrow stream, answered in Arrow."""
        return arrow_call(target, pa.Table.from_batches([self.batch.select(list(self.inputs))]))

    def bad(self, positions: Sequence[int], reasons: Sequence[str]) -> pa.Table:
        picked = self.batch.take(pa.array(positions, pa.int64()))
        texts = [encode_json(r).decode() for r in picked.select(list(self.inputs)).to_pylist()]
        return _bad_table(self.ids[list(positions)], {k: picked.column(k) for k in self.keys}, reasons, texts)


@dataclass(frozen=True)
class JsonRows:
    """Rows as JSON objects (one per line); key values become text."""

    objects: list[Any]
    lines: list[bytes]
    ids: np.ndarray
    keys: tuple[str, ...]
    drop: frozenset[str]  # names that are keys or ignored, not inputs: not sent to the function

    @property
    def n(self) -> int:
        return len(self.objects)

    def decode(self, schema: Schema) -> tuple[dict[str, Any], int]:
        return checks.from_instances(schema, self.instances())

    def instances(self) -> list[Any]:
        drop = self.drop
        if not drop:
            return self.objects
        return [
            {k: v for k, v in o.items() if k not in drop} if isinstance(o, dict) else o for o in self.objects
        ]

    def take(self, positions: Sequence[int]) -> JsonRows:
        return JsonRows(
            [self.objects[p] for p in positions],
            [self.lines[p] for p in positions],
            self.ids[list(positions)],
            self.keys,
            self.drop,
        )

    def key_columns(self) -> list[pa.Array]:
        return [pa.array([_key_text(o, k) for o in self.objects], pa.string()) for k in self.keys]

    def call(self, target: str) -> Call:
        """``{"instances": [...]}`` as JSON, answered in Arrow."""
        headers = {"content-type": "application/json", "accept": ARROW_STREAM_TYPE}
        body = encode_json({"instances": self.instances()})
        return Call("POST", function_path(target), content=body, headers=headers, expected=self.n)

    def bad(self, positions: Sequence[int], reasons: Sequence[str]) -> pa.Table:
        objects = [self.objects[p] for p in positions]
        keys = {k: pa.array([_key_text(o, k) for o in objects], pa.string()) for k in self.keys}
        texts = [self.lines[p].decode("utf-8", "replace").strip() for p in positions]
        return _bad_table(self.ids[list(positions)], keys, reasons, texts)


Rows = ArrowRows | JsonRows


def rows_of(
    piece: Piece, fmt: str, schema: Schema, keys: Sequence[str], drop: frozenset[str] = frozenset()
) -> tuple[Rows | None, pa.Table | None]:
    """A piece as rows to score, and its rows that are bad already (CSV cells that are not of their
    input's type, CSV lines that are not rows, lines that are not JSON), or None for either."""
    ids = np.arange(piece.first_row, piece.first_row + _length(piece.raw), dtype=np.int64)
    bad: list[pa.Table] = []
    rows: Rows | None = None
    if fmt == "jsonl":
        objects, broken = [], []
        for position, line in enumerate(piece.raw):
            try:
                objects.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                objects.append(None)
                broken.append((position, f"not valid JSON: {exc}"))
        rows = JsonRows(objects, list(piece.raw), ids, tuple(keys), drop)
        if broken:
            bad.append(rows.bad([p for p, _ in broken], [r for _, r in broken]))
            rows = rows.take(sorted(set(range(rows.n)) - {p for p, _ in broken}))
    elif piece.raw is not None:
        batch, names = piece.raw, piece.raw.schema.names
        present = tuple(f.name for f in schema.inputs if f.name in names)
        typed: dict[int, str] = {}
        if fmt == "csv":
            batch, typed = type_cells(schema.inputs, batch)
        rows = ArrowRows(batch, ids, present, tuple(keys))
        if typed:
            bad.append(rows.bad(sorted(typed), [typed[p] for p in sorted(typed)]))
            rows = rows.take(sorted(set(range(rows.n)) - set(typed)))
    if piece.invalid:
        bad.append(unreadable_lines(piece.invalid, keys))
    return (rows if rows is not None and rows.n else None), (_concat(bad) if bad else None)


def unreadable_lines(lines: Sequence[tuple[int, str]], keys: Sequence[str]) -> pa.Table:
    """CSV lines that are not rows: no row number (the line's is in the error), no keys."""
    nothing = {k: pa.nulls(len(lines), pa.string()) for k in keys}
    return _bad_table(np.full(len(lines), -1), nothing, [text for _, text in lines], [""] * len(lines))


def _bad_table(
    ids: np.ndarray, keys: dict[str, pa.Array], reasons: Sequence[str], texts: Sequence[str]
) -> pa.Table:
    row = pa.array(ids, pa.int64(), mask=ids < 0)
    columns = {ROW: row, **keys, ERROR: pa.array(reasons, pa.string()), INPUT: pa.array(texts, pa.string())}
    return pa.table(columns)


def _concat(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def _length(raw: Any) -> int:
    return 0 if raw is None else len(raw) if isinstance(raw, list) else int(raw.num_rows)


def _key_text(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()

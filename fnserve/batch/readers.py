"""Each sequential format's reader: a file's rows as the format's own library hands them over.

Arrow IPC through pyarrow (a file's batches in order, or a stream's when the file has no footer);
CSV through pyarrow's streaming reader, every wanted column as text (typed later, cell by cell
where need be, by :mod:`fnserve.batch.text`), lines with the wrong number of cells kept as bad
lines; JSON lines as lines (parsed with orjson, one object each, by :mod:`fnserve.batch.rows`).
Parquet is read by pyarrow.dataset, row group by row group (:mod:`fnserve.batch.source`).

>>> import io
>>> bad: list[tuple[int, str]] = []
>>> [b.num_rows for b in rows("csv", io.BytesIO(b"a,b\\n1,2\\n3\\n4,5\\n"), ["a"], bad)], bad
([2], [(3, 'line 3: expected 2 cells, got 1: 3')])
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

CSV_BLOCK_BYTES = 1 << 20  # pyarrow parses (and holds) CSV this much at a time
JSON_BLOCK_LINES = 4096  # JSON lines read at a time, before being cut into batches
JSON_SAMPLE_LINES = 1000  # lines whose keys say a JSON lines input's columns
Invalid = tuple[tuple[int, str], ...]  # CSV lines that are not rows: (line number, what is wrong)


def columns(fmt: str, stream: Any) -> dict[str, pa.DataType | None]:
    """The columns of a file's first rows: Arrow's with their types; CSV's and JSON lines' names
    (their values are text, typed row by row)."""
    if fmt == "arrow":
        with ipc_batches(stream) as (schema, _):
            return {field.name: field.type for field in schema}
    if fmt == "csv":
        return dict.fromkeys(pacsv.open_csv(stream, read_options=_csv_read_options()).schema.names)
    return dict.fromkeys(_json_keys(itertools.islice(stream, JSON_SAMPLE_LINES)))


def rows(fmt: str, stream: Any, wanted: Sequence[str], invalid: list[tuple[int, str]]) -> Iterator[Any]:
    """A file's rows, a block at a time: record batches of the ``wanted`` columns (Arrow, CSV), or
    non-blank lines (JSON lines). Bad CSV lines are appended to ``invalid`` as they are met."""
    if fmt == "arrow":
        with ipc_batches(stream) as (schema, batches):
            present = [c for c in wanted if c in schema.names]
            yield from (batch.select(present) for batch in batches)
        return
    if fmt == "csv":
        yield from pacsv.open_csv(
            stream,
            read_options=_csv_read_options(),
            parse_options=pacsv.ParseOptions(invalid_row_handler=_collector(invalid)),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(wanted, pa.string()), include_columns=list(wanted)
            ),
        )
        return
    while block := list(itertools.islice(stream, JSON_BLOCK_LINES)):
        lines = [line for line in block if line.strip()]
        if lines:
            yield lines


@contextlib.contextmanager
def ipc_batches(stream: Any) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """An Arrow IPC file's schema and batches in order; a stream's when it has no file footer."""
    try:
        reader = pa.ipc.open_file(stream)
    except pa.ArrowInvalid:
        stream.seek(0)
        with pa.ipc.open_stream(stream) as streamed:
            yield streamed.schema, iter(streamed)
        return
    yield reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))


def _csv_read_options() -> pacsv.ReadOptions:
    # One thread: blocks are parsed in order, so bad lines are met with the rows around them.
    return pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES)


def _collector(invalid: list[tuple[int, str]]) -> Callable[[Any], str]:
    """pyarrow's handler of CSV lines with the wrong number of cells: skipped, kept as bad rows."""

    def handle(row: Any) -> str:
        problem = f"line {row.number}: expected {row.expected_columns} cells, got {row.actual_columns}"
        invalid.append((int(row.number or 0), f"{problem}: {row.text}"))
        return "skip"

    return handle


def _json_keys(lines: Iterator[bytes]) -> list[str]:
    keys: dict[str, None] = {}
    for line in lines:
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(line)
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
    return list(keys)

"""Arrow IPC bodies for the client: columns in, a table of predictions out.

For large batches Arrow is the fast path: numbers travel as raw buffers, nothing is encoded per
row. The server answers in Arrow when asked to (``Accept``), one column per output (``prediction``
when the function returns one value per instance).

    >>> import numpy as np
    >>> table = to_table({"x": [1.0, 2.0], "v": np.zeros((2, 3), np.float32), "img": [b"..", b".."]})
    >>> table.schema.types
    [DataType(double), FixedSizeListType(fixed_size_list<item: float>[3]), DataType(binary)]
    >>> [t.num_rows for t in slices(table, 1)]
    [1, 1]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import httpx
import numpy as np
import pyarrow as pa

from fnserve.client.core import Call, ClientError, function_path

ARROW_STREAM_TYPE = "application/vnd.apache.arrow.stream"
Columns: TypeAlias = "pa.Table | pa.RecordBatch | Mapping[str, Any]"  # pyarrow ships no types


def to_table(data: Columns) -> pa.Table:
    """A table from an Arrow table/batch or a mapping of columns (lists, numpy arrays — ``(n, ...)``
    arrays become fixed-size lists, i.e. tensors — or lists of image bytes)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    return pa.table({name: _column(values) for name, values in data.items()})


def _column(values: Any) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, np.ndarray) and values.ndim > 1:
        flat: pa.Array = pa.array(np.ascontiguousarray(values).reshape(-1))
        for size in reversed(values.shape[1:]):
            flat = pa.FixedSizeListArray.from_arrays(flat, size)
        return flat
    return pa.array(values)


def encode(table: pa.Table) -> bytes:
    """The table as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def arrow_call(function: str, table: pa.Table) -> Call:
    """POST the table as an Arrow stream, asking for the answer in Arrow too."""
    headers = {"content-type": ARROW_STREAM_TYPE, "accept": ARROW_STREAM_TYPE}
    return Call(
        "POST", function_path(function), content=encode(table), headers=headers, expected=table.num_rows
    )


def read_answer(response: httpx.Response, expected: int | None) -> pa.Table:
    """The answer's Arrow stream as a table, checked to hold ``expected`` rows."""
    return answer_table(response.headers.get("content-type", ""), response.content, expected)


def answer_table(content_type: str, content: bytes, expected: int | None) -> pa.Table:
    """:func:`read_answer` from an answer's content type and body (read by another connection)."""
    kind = content_type.split(";")[0].strip()
    if kind != ARROW_STREAM_TYPE:
        raise ClientError(f"asked for Arrow, the server answered {kind or 'no content type'}", 200)
    try:
        table = pa.ipc.open_stream(pa.py_buffer(content)).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise ClientError(f"the answer is not a valid Arrow stream: {exc}", 200) from None
    if expected is not None and table.num_rows != expected:
        raise ClientError(f"asked for {expected} predictions, the answer holds {table.num_rows}", 200)
    return table


def slices(table: pa.Table, size: int) -> list[pa.Table]:
    """Consecutive zero-copy slices of at most ``size`` rows."""
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


def concat(parts: list[pa.Table]) -> pa.Table:
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

"""Arrow IPC bodies: a record batch in (one column per input), a record batch out.

For large batches Arrow beats JSON by an order of magnitude: numeric columns become numpy
arrays without a copy (so they may be read-only), strings and dictionary-encoded strings
are checked in C, and nothing runs per row in Python except image decoding. Accepted column
types: integers and floats, booleans, ``string`` (or a dictionary of strings) for ``str`` and
``Literal`` inputs, ``fixed_size_list``/``list`` (nested for more dimensions) for tensors, and
``binary`` (encoded JPEG/PNG) or a uint8 list of pixels for images. Nulls in an optional input
take its default.

    import pyarrow as pa, requests
    table = pa.table({"x": [1.0, 2.0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    answer = requests.post(url, data=sink.getvalue().to_pybytes(),
                           headers={"Content-Type": "application/vnd.apache.arrow.stream"})
    pa.ipc.open_stream(answer.content).read_all()        # column "prediction"
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from fnserve.runtime import columns, rules
from fnserve.runtime.errors import BadRequest, ModelError, PayloadTooLarge, Problems, ValidationError
from fnserve.runtime.http import ARROW_STREAM_TYPE, JSON_TYPE
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.schema import InputField, Schema

ARROW_FILE_TYPE = "application/vnd.apache.arrow.file"
PREDICTION = "prediction"  # the name of a function's output when it is not a dict
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # continuation marker, then a 0 length


def decode(schema: Schema, body: bytes, file_format: bool = False) -> tuple[dict[str, Any], int]:
    """An Arrow IPC stream (or file) to validated input columns and their row count."""
    return decode_table(schema, read_table(body, file_format))


def has_encoded_images(schema: Schema, table: pa.Table) -> bool:
    """Whether decoding ``table`` means decoding JPEG/PNG bytes (milliseconds), not just
    taking numeric buffers as they are (microseconds)."""
    images = {f.name for f in schema.inputs if f.kind == "image"}
    return any(_is_binary(table.schema.field(name).type) for name in table.column_names if name in images)


def decode_table(schema: Schema, table: pa.Table) -> tuple[dict[str, Any], int]:
    """A read Arrow table to validated input columns and their row count (or one error naming
    every bad, unknown or missing column)."""
    n = table.num_rows
    columns.check_rows(n, "Arrow body")
    given: dict[str, Any] = {}
    problems = Problems()
    for name in table.column_names:
        field = schema.field(name)
        given[name] = None  # complete() names an unknown one
        if field is not None:
            chunked = table.column(name)
            array = chunked.chunk(0) if chunked.num_chunks == 1 else pa.concat_arrays(chunked.chunks)
            with problems:
                given[name] = from_arrow(field, array)
    with problems:
        checked = columns.complete(schema, given, n)
    problems.raise_any()
    return checked, n


def read_table(body: bytes, file_format: bool = False) -> pa.Table:
    if not body:
        raise BadRequest("request body is empty; expected an Arrow IPC stream")
    try:
        if file_format:
            return pa.ipc.open_file(pa.py_buffer(body)).read_all()
        reader = pa.ipc.open_stream(pa.py_buffer(body))
        batches, rows = [], 0
        for batch in reader:  # count as we go: refuse a huge batch before converting anything
            rows += batch.num_rows
            if rows > columns.MAX_ROWS:
                raise PayloadTooLarge(f"Arrow body: over the limit of {columns.MAX_ROWS} rows")
            batches.append(batch)
        return pa.Table.from_batches(batches, reader.schema)
    except (pa.ArrowException, ValueError, OSError) as exc:
        kind = "file" if file_format else "stream"
        raise BadRequest(f"request body is not a valid Arrow IPC {kind}: {exc}") from None


def from_arrow(field: InputField, array: pa.Array, label: str | None = None) -> Any:
    """One Arrow column as the field's checked numpy column."""
    label = label or field.name
    kind, arrow_type = field.kind, array.type
    if array.null_count:
        if field.required or kind in ("tensor", "image"):
            bad = columns.BadRows(label)
            nulls = array.is_null().to_numpy(zero_copy_only=False)
            bad.flag(nulls, lambda _: f"{rules.missing(field)}: null")
            bad.raise_any()
        if pa.types.is_dictionary(arrow_type):
            array, arrow_type = array.dictionary_decode(), arrow_type.value_type
        try:
            array = array.fill_null(pa.scalar(field.default, type=arrow_type))
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            raise ValidationError.at(
                label, f"a null cannot take the default {field.default!r} in a column of {arrow_type}"
            ) from None
    if pa.types.is_dictionary(arrow_type):
        if kind in ("str", "category") and pa.types.is_string(arrow_type.value_type):
            return _dictionary_strings(field, array, label)
        array, arrow_type = array.dictionary_decode(), arrow_type.value_type
    if kind in ("str", "category"):
        if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)):
            raise _wrong_type(label, "string", arrow_type)
        return columns.check(
            field, array.to_numpy(zero_copy_only=False), label
        )  # categories: a set test in C
    if kind == "image" and _is_binary(arrow_type):
        return columns.images(field, array.to_pylist(), label)
    if kind in ("tensor", "image"):
        if not _is_list(arrow_type):
            raise _wrong_type(label, "a list (tensor)", arrow_type)
        return columns.check(field, _list_to_numpy(array, label), label)
    if kind == "bool" and not pa.types.is_boolean(arrow_type):
        raise _wrong_type(label, "bool", arrow_type)
    if kind in ("int", "float") and not (pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)):
        raise _wrong_type(label, "a number", arrow_type)
    return columns.check(field, array.to_numpy(zero_copy_only=False), label)


def _dictionary_strings(field: InputField, array: pa.DictionaryArray, label: str) -> np.ndarray:
    """Check the (small) dictionary once, then index it: equal strings share one object."""
    words = array.dictionary.to_numpy(zero_copy_only=False)
    codes = array.indices.to_numpy(zero_copy_only=False)
    if field.kind == "category":
        bad_codes = np.flatnonzero(~np.isin(words, field.choices))
        if bad_codes.size:
            bad = columns.BadRows(label)
            named = np.isin(codes, bad_codes)
            bad.flag(named, lambda row: rules.not_a_choice(field.choices, words[codes[row]]))
            bad.raise_any()
    return np.asarray(words[codes], dtype=object)


def _list_to_numpy(array: pa.Array, label: str) -> np.ndarray:
    """(Nested) lists of equal length per level to one (n, d1, d2, ...) array, without a copy.

    Each level's values are sliced to the rows in view by hand: ``flatten()`` would do the same
    through a compute kernel call per level, which costs more than the rest of the decode.
    """
    n, values = len(array), array
    dims: list[int] = []
    while _is_list(values.type):
        if values.null_count:
            raise columns.fail(label, 0, "a tensor holds a null list")
        if pa.types.is_fixed_size_list(values.type):
            size = values.type.list_size
            start, count = values.offset * size, len(values) * size
        else:
            offsets = values.offsets.to_numpy()  # of the rows in view, not rebased to 0
            lengths = np.diff(offsets)
            if lengths.size and (lengths != lengths[0]).any():
                row = int(np.argmax(lengths != lengths[0])) // max(1, int(np.prod(dims, dtype=np.int64)))
                raise columns.fail(label, row, "tensor rows must all have the same shape")
            size = int(lengths[0]) if lengths.size else 0
            start, count = int(offsets[0]), int(offsets[-1] - offsets[0])
        dims.append(size)
        values = values.values.slice(start, count)
    if values.null_count:
        raise columns.fail(label, 0, "a tensor holds a null value")
    if not (
        pa.types.is_integer(values.type)
        or pa.types.is_floating(values.type)
        or pa.types.is_boolean(values.type)
    ):
        raise _wrong_type(label, "numbers in the tensor", values.type)
    return values.to_numpy(zero_copy_only=False).reshape(n, *dims)


def _is_list(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def _is_binary(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
        or pa.types.is_string(arrow_type)  # base64 text
    )


def _wrong_type(label: str, expected: str, got: pa.DataType) -> ValidationError:
    return ValidationError.at(label, f"expected an Arrow column of {expected}, got {got}")


# --- outputs -------------------------------------------------------------------------------------


def output_columns(outputs: Outputs) -> dict[str, np.ndarray]:
    """The outputs as named numpy columns: a dict output's keys, else one column ``prediction``."""
    named = outputs.named
    if named is None:
        value = outputs.value
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            keys = list(value[0])
            try:
                named = {str(k): [row[k] for row in value] for k in keys}
            except KeyError as exc:
                raise ModelError(f"the function returned dicts with different keys ({exc})") from None
        else:
            return {PREDICTION: _as_array(value)}
    return {name: _as_array(column) for name, column in named.items()}


def _as_array(column: Any) -> np.ndarray:
    if isinstance(column, np.ndarray):
        return column
    try:
        array = np.asarray(column)
    except ValueError:  # ragged
        array = None
    if array is None or array.dtype.kind not in "biufO" or array.dtype == object:
        array = np.empty(len(column), dtype=object)
        array[:] = list(column)
    return array


def to_arrow(array: np.ndarray) -> pa.Array:
    """A numpy column to an Arrow array: zero-copy for numbers, fixed_size_list for tensors."""
    if array.dtype == object:
        try:
            return pa.array(list(array))
        except (pa.ArrowException, ValueError, TypeError):
            import orjson

            return pa.array([orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode() for v in array])
    flat = pa.array(np.ascontiguousarray(array).reshape(-1))
    for size in reversed(array.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, size)
    return flat


def encode(outputs: Outputs) -> bytes:
    """The outputs as an Arrow IPC stream of one record batch: the schema message, the batch
    message and the end-of-stream marker, as ``pa.ipc.new_stream`` writes them, without a writer
    object per answer."""
    named = output_columns(outputs)
    batch = pa.RecordBatch.from_arrays([to_arrow(column) for column in named.values()], names=list(named))
    return b"".join((batch.schema.serialize().to_pybytes(), batch.serialize().to_pybytes(), END_OF_STREAM))


def accepts_arrow(accept: str, default: bool) -> bool:
    """Answer in Arrow? When ``Accept`` prefers the Arrow stream type to JSON; when it names
    neither (absent, ``*/*``), answer in the request's own format (``default``).

    >>> accepts_arrow("application/vnd.apache.arrow.stream", default=False)
    True
    >>> accepts_arrow("application/json", default=True), accepts_arrow("*/*", default=True)
    (False, True)
    """
    accept = accept.lower()
    if ARROW_STREAM_TYPE not in accept:  # the common case, decided without parsing
        return default and JSON_TYPE not in accept
    quality: dict[str, float] = {}
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        quality[kind] = max(q, quality.get(kind, 0.0))
    arrow_q, json_q = quality.get(ARROW_STREAM_TYPE), quality.get(JSON_TYPE)
    if arrow_q is None:
        return default and json_q is None
    return arrow_q > 0 and arrow_q >= (json_q or 0.0)

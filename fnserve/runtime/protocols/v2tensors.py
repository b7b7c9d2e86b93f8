"""Open Inference Protocol (v2) tensors to checked input columns, and outputs back to tensors.

Pure functions over parsed JSON, so every rule is unit-tested without HTTP. A request input
``{"name", "shape", "datatype", "data"}`` becomes the function's column: ``shape[0]`` is the
batch, ``data`` is flat or nested row-major, and the Binary Tensor Data extension's raw bytes
(``parameters.binary_data_size``) are read without a copy. Datatypes are those of the spec;
an input's datatype must suit its type hint (numbers for ``int``/``float``, ``BOOL``, ``BYTES``
for strings and encoded images, a numeric type for tensors, or ``UINT8`` pixels for images).

    >>> from fnserve.runtime.schema import InputField
    >>> x = InputField("x", "float", True)
    >>> column(x, {"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [[1.5], [2]]}, b"")
    (array([1.5, 2. ]), 0)
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from fnserve.runtime import columns, rules
from fnserve.runtime.errors import ModelError, Problem, ValidationError
from fnserve.runtime.schema import InputField, OutputSpec

DTYPES = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPE_OF = {dtype.name: name for name, dtype in DTYPES.items()}
NUMERIC = frozenset(DTYPES) - {"BOOL"}
ALLOWED = {
    "int": NUMERIC,
    "float": NUMERIC,
    "bool": frozenset({"BOOL"}),
    "str": frozenset({"BYTES"}),
    "category": frozenset({"BYTES"}),
    "image": frozenset({"BYTES", "UINT8"}),
}


def input_metadata(field: InputField) -> dict[str, Any]:
    """``{"name", "datatype", "shape"}`` of an input; -1 marks the batch and free dimensions."""
    if field.kind == "tensor":
        datatype, shape = DATATYPE_OF[field.dtype], [-1, *(d or -1 for d in field.shape)]
    elif field.kind in ("int", "float", "bool"):
        datatype, shape = DATATYPE_OF[field.dtype], [-1]
    else:
        datatype, shape = "BYTES", [-1]
    out: dict[str, Any] = {"name": field.name, "datatype": datatype, "shape": shape}
    if field.kind == "image":
        out["parameters"] = {"content_type": "image"}  # encoded JPEG/PNG/...; or UINT8 pixels
    return out


def output_metadata(spec: OutputSpec, name: str) -> dict[str, Any]:
    if spec.tensor is not None:
        shape = [-1, *(d or -1 for d in spec.tensor.shape)]
        return {"name": name, "datatype": DATATYPE_OF[spec.tensor.dtype], "shape": shape}
    datatype = {"int": "INT64", "float": "FP64", "bool": "BOOL", "str": "BYTES"}.get(spec.kind, "FP64")
    return {"name": name, "datatype": datatype, "shape": [-1]}


def tensor_metadata(name: str, array: np.ndarray) -> dict[str, Any]:
    """What an output column looks like, for model metadata (the batch dimension as -1)."""
    datatype = DATATYPE_OF.get(array.dtype.name, "BYTES")
    return {"name": name, "datatype": datatype, "shape": [-1, *array.shape[1:]]}


def column(field: InputField, tensor: dict[str, Any], binary: bytes | memoryview) -> tuple[Any, int]:
    """One request input as the field's checked column; also returns the binary bytes it used."""
    name, shape, datatype = field.name, tensor["shape"], tensor["datatype"]
    allowed = ALLOWED.get(field.kind, frozenset(DTYPES))
    if datatype not in allowed:
        expected = (
            "a numeric datatype (INT*, UINT*, FP*)" if allowed == NUMERIC else " or ".join(sorted(allowed))
        )
        raise ValidationError.at(name, f"datatype {datatype} does not suit this input; expected {expected}")
    count = int(np.prod(shape, dtype=np.int64))
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None and size > len(binary):
        raise ValidationError.at(
            name, f"binary_data_size {size} is more than the {len(binary)} bytes of binary data left"
        )
    if datatype == "BYTES":
        items = _bytes_items(name, count, size, tensor, binary)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise ValidationError.at(name, f"expected shape [batch] or [batch, 1], got {shape}")
        if field.kind == "image":
            return columns.images(field, items), size or 0
        if size is not None:
            items = _utf8(name, items)
        return columns.from_json(field, items), size or 0
    dtype = DTYPES[datatype]
    if size is not None:
        if size != count * dtype.itemsize:
            raise ValidationError.at(
                name,
                f"binary_data_size {size} does not match shape {shape} of {datatype} "
                f"({count * dtype.itemsize} bytes)",
            )
        array = np.frombuffer(binary, dtype=dtype, count=count) if count else np.zeros(0, dtype)
    else:
        array = _json_numbers(name, tensor, count)
    array = array.reshape(shape)
    if field.kind in ("int", "float", "bool"):
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise ValidationError.at(name, f"expected shape [batch] or [batch, 1], got {shape}")
        array = array.reshape(shape[0])
    return columns.check(field, array), size or 0


def _json_numbers(name: str, tensor: dict[str, Any], count: int) -> np.ndarray:
    if "data" not in tensor:
        raise ValidationError.at(name, "no data (give data, or parameters.binary_data_size)")
    try:
        array = np.asarray(tensor["data"])
    except ValueError:
        ragged = f"data is ragged; expected {count} values in row-major order"
        raise ValidationError.at(name, ragged) from None
    if array.dtype.kind not in "biuf":
        raise ValidationError.at(name, "data must be numbers (or booleans for BOOL)")
    if array.size != count:
        raise ValidationError.at(name, f"shape {tensor['shape']} needs {count} values, got {array.size}")
    return array.reshape(-1)


def _bytes_items(
    name: str, count: int, size: int | None, tensor: dict[str, Any], binary: bytes | memoryview
) -> list[Any]:
    """BYTES elements: from JSON (strings, or ``{"b64": ...}`` for images) or 4-byte-length-prefixed."""
    if size is None:
        if "data" not in tensor:
            raise ValidationError.at(name, "no data (give data, or parameters.binary_data_size)")
        data = tensor["data"]
        if not isinstance(data, list):
            raise ValidationError.at(name, "data must be a list")
        if data and isinstance(data[0], list):  # nested [[...], [...]]: flatten one level per dim
            data = [item for row in data for item in (row if isinstance(row, list) else [row])]
        if len(data) != count:
            raise ValidationError.at(name, f"shape {tensor['shape']} needs {count} values, got {len(data)}")
        return data
    view, offset = memoryview(binary)[:size], 0
    items: list[Any] = []
    while offset < size:
        if offset + 4 > size:
            raise ValidationError.at(name, "binary BYTES data is truncated")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > size:
            raise ValidationError.at(name, f"binary BYTES element {len(items)} is truncated")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise ValidationError.at(name, f"shape {tensor['shape']} needs {count} values, got {len(items)}")
    return items


def _utf8(name: str, items: list[bytes]) -> list[str]:
    try:
        return [item.decode() for item in items]
    except UnicodeDecodeError:
        bad = [Problem(f"{name}[{r}]", rules.NOT_UTF8) for r, item in enumerate(items) if not _is_utf8(item)]
        raise ValidationError.of(bad, len(bad)) from None


def _is_utf8(item: bytes) -> bool:
    try:
        item.decode()
    except UnicodeDecodeError:
        return False
    return True


def output_tensor(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    """One output column as a response tensor; with ``binary`` its data travels after the JSON."""
    if array.dtype == object or array.dtype.kind in "US":
        items = [v if isinstance(v, (str, bytes)) else _json_text(v) for v in array.reshape(-1).tolist()]
        out: dict[str, Any] = {"name": name, "datatype": "BYTES", "shape": list(array.shape)}
        if not binary:
            out["data"] = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in items]
            return out, b""
        blobs = [v.encode() if isinstance(v, str) else v for v in items]
        raw = b"".join(struct.pack("<I", len(b)) + b for b in blobs)
        out["parameters"] = {"binary_data_size": len(raw)}
        return out, raw
    if array.dtype.name not in DATATYPE_OF:
        raise ModelError(f"output {name!r} has dtype {array.dtype}, which the v2 protocol cannot carry")
    flat = np.ascontiguousarray(array).reshape(-1)
    out = {"name": name, "datatype": DATATYPE_OF[array.dtype.name], "shape": list(array.shape)}
    if binary:
        raw = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        return out, raw
    out["data"] = flat  # orjson writes numpy arrays natively, without a Python float per value
    return out, b""


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()

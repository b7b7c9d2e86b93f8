"""Pure decoding and validation: request values in, numpy columns out, predictions back.

Nothing here touches asyncio or HTTP, so every rule is unit-tested directly. Each error is
a ``ValidationError`` that names the field (and the instance, in a batch) and what was
expected.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import simplejpeg
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from fnserve.runtime.errors import ValidationError
from fnserve.runtime.outputs import Outputs, concat_column
from fnserve.runtime.schema import InputField, OutputSpec, Schema

MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs before decoding them
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def query_items(query_string: bytes) -> list[tuple[str, str]]:
    """A raw query string's ``(name, value)`` pairs, as Starlette's ``QueryParams`` reads them.

    The common case (no escapes) is split directly: this runs for every GET prediction, and
    ``urllib.parse.parse_qsl`` costs several times more.

    >>> query_items(b"a=1&b=x%20y&flag")
    [('a', '1'), ('b', 'x y'), ('flag', '')]
    """
    text = query_string.decode("latin-1")
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True)
    return [(name, value) for name, _, value in (part.partition("=") for part in text.split("&") if part)]


def parse_query(schema: Schema, items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """One instance from query parameters (``GET /function/{name}?a=1&b=x``)."""
    raw: dict[str, str] = {}
    for key, value in items:
        field = schema.field(key)
        if field is None:
            raise ValidationError(f"unknown parameter {key!r}; expected {_names(schema)}")
        if key in raw:
            raise ValidationError(f"parameter {key!r} is given more than once")
        if field.kind == "image":
            raise ValidationError(f"{key}: images cannot be sent as query parameters; POST the image bytes")
        raw[key] = value
    instance: dict[str, Any] = {}
    for field in schema.inputs:  # one pass: convert, check, fill defaults
        text = raw.get(field.name)
        instance[field.name] = checked_or_default(
            field, None if text is None else from_text(field, text), field.name
        )
    return instance


def from_text(field: InputField, text: str) -> Any:
    """Query values are text: turn them into the JSON-like value the field expects."""
    if field.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValidationError(f"{field.name}: expected an integer, got {text!r}") from None
    if field.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValidationError(f"{field.name}: expected a number, got {text!r}") from None
    if field.kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValidationError(f"{field.name}: expected true or false, got {text!r}")
    if field.kind == "tensor":
        parts = text.strip("[]").split(",") if text.strip("[]") else []
        try:
            return [float(p) for p in parts]
        except ValueError:
            raise ValidationError(f"{field.name}: expected comma-separated numbers, got {text!r}") from None
    return text


def validate_instance(schema: Schema, instance: Any, where: str = "") -> dict[str, Any]:
    """Check one instance (a JSON object) against the schema; fill defaults."""
    if not isinstance(instance, Mapping):
        raise ValidationError(
            f"{where.rstrip('.') or 'body'}: expected a JSON object of inputs, got {_kind(instance)}"
        )
    for key in instance:
        if schema.field(key) is None:
            raise ValidationError(f"{where}{key}: unknown input; expected {_names(schema)}")
    return {f.name: checked_or_default(f, instance.get(f.name), where + f.name) for f in schema.inputs}


def checked_or_default(field: InputField, value: Any, label: str) -> Any:
    """``value`` checked for ``field``; when absent (None), the field's default, or an error if
    it is required."""
    if value is None:
        if field.required:
            raise ValidationError(f"{label}: missing required input ({field.kind})")
        return field.default
    return check_value(field, value, label)


def check_value(field: InputField, value: Any, label: str) -> Any:
    """One JSON value checked and converted for ``field``; ``label`` names it in errors."""
    kind = field.kind
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError(f"{label}: expected an integer, got {_kind(value)}")
        if not -(2**63) <= value < 2**63:
            raise ValidationError(f"{label}: {value} does not fit in a 64-bit integer")
        return _bounded(field, value, label)
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValidationError(f"{label}: expected a number, got {_kind(value)}")
        value = float(value)
        if not math.isfinite(value) and not (field.constraint and field.constraint.allow_nan):
            raise ValidationError(f"{label}: expected a finite number, got {value}")
        return _bounded(field, value, label)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValidationError(f"{label}: expected true or false, got {_kind(value)}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValidationError(f"{label}: expected a string, got {_kind(value)}")
        return value
    if kind == "category":
        if value not in field.choices:
            raise ValidationError(f"{label}: expected one of {', '.join(field.choices)}, got {value!r}")
        return value
    if kind == "tensor":
        return _tensor(field, value, label)
    if isinstance(value, np.ndarray):  # already decoded (raw image body)
        return value
    return decode_image(field, image_bytes(value, label), label)


def _bounded(field: InputField, value: float, label: str) -> Any:
    c = field.constraint
    if c is not None and math.isfinite(value):
        if c.ge is not None and value < c.ge:
            raise ValidationError(f"{label}: must be >= {c.ge}, got {value}")
        if c.le is not None and value > c.le:
            raise ValidationError(f"{label}: must be <= {c.le}, got {value}")
    return value


def _tensor(field: InputField, value: Any, label: str) -> np.ndarray:
    assert field.tensor is not None
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value, dtype=np.float64 if field.tensor.dtype != "bool" else bool)
        except (ValueError, TypeError):
            raise ValidationError(
                f"{label}: expected a nested list of numbers of shape {_shape(field)}"
            ) from None
    if array.ndim != len(field.shape) or any(
        want is not None and want != got for want, got in zip(field.shape, array.shape, strict=True)
    ):
        raise ValidationError(f"{label}: expected shape {_shape(field)}, got {list(array.shape)}")
    nan_allowed = field.constraint is not None and field.constraint.allow_nan
    if array.dtype.kind == "f" and not nan_allowed and not np.isfinite(array).all():
        raise ValidationError(f"{label}: expected finite numbers, got NaN or infinity")
    integral = field.tensor.dtype.startswith(("int", "uint"))
    if integral and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise ValidationError(f"{label}: expected integers ({field.tensor.dtype})")
    # The cast below would silently wrap out-of-range integers (300 -> 44 in uint8) and turn
    # large floats into infinity: refuse such values instead of handing the model wrong ones.
    target = np.dtype(field.tensor.dtype)
    if integral and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() >= info.max + 1:  # `>= max + 1`: exact for float64
            raise ValidationError(f"{label}: expected integers from {info.min} to {info.max} ({target.name})")
    with np.errstate(over="ignore"):
        converted = array.astype(target, copy=False)
    if target.kind == "f" and not nan_allowed and not np.isfinite(converted).all():
        raise ValidationError(f"{label}: a value is too large for {target.name}")
    return converted


def image_bytes(value: Any, label: str) -> bytes:
    """Images in JSON are base64 text or ``{"b64": "..."}`` (TF Serving's binary convention)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Mapping) and set(value) == {"b64"}:
        value = value["b64"]
    if not isinstance(value, str):
        raise ValidationError(f"{label}: expected a base64-encoded image, got {_kind(value)}")
    if value.startswith("data:") and "," in value:  # data URLs as produced by browsers
        value = value.split(",", 1)[1]
    try:
        # Line breaks are common (the `base64` tool wraps at 76 columns); other junk is an error.
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"{label}: not valid base64") from None


def decode_image(field: InputField, data: bytes, label: str) -> np.ndarray:
    """JPEG/PNG/... bytes to a uint8 RGB array, resized to the field's size if it has one."""
    assert field.image is not None
    try:
        pixels = _decode_jpeg(field, data, label)
        if pixels is None:
            with PILImage.open(io.BytesIO(data)) as opened:
                _check_pixels(opened.width, opened.height, label)
                pixels = np.asarray(opened.convert(field.image.mode), dtype=np.uint8)
    except ValidationError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ValidationError(
            f"{label}: not a decodable image (expected JPEG, PNG, GIF, BMP or WebP)"
        ) from None
    if field.image.size is None or pixels.shape[:2] == field.image.size:
        return pixels
    height, width = field.image.size
    resized = PILImage.fromarray(pixels).resize((width, height), PILImage.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def _decode_jpeg(field: InputField, data: bytes, label: str) -> np.ndarray | None:
    """A JPEG straight through libjpeg-turbo (simplejpeg): for small photos ~3.5x faster than
    PIL, whose header parsing in Python costs more than the decoding. ``None``: PIL decides
    (another format or mode, or data simplejpeg refuses, which PIL then names)."""
    assert field.image is not None
    if field.image.mode != "RGB" or not data.startswith(b"\xff\xd8"):
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        _check_pixels(width, height, label)
        pixels: np.ndarray = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None
    return pixels


def _check_pixels(width: int, height: int, label: str) -> None:
    """Refuse decompression bombs from their header, before decoding them."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ValidationError(f"{label}: image of {width}x{height} pixels is too large")


class Rows(list[dict[str, Any]]):
    """Validated instances whose columns are built once per batch rather than once per request.

    A one-instance request (a GET) hands these to the batcher; the model thread stacks every
    waiting instance into columns at once, which costs far less than a one-row column per
    request plus a concatenation of them all.
    """


def to_columns(schema: Schema, instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Validated instances to one column per input (numpy, first axis = batch)."""
    columns: dict[str, Any] = {}
    for field in schema.inputs:
        values = [inst[field.name] for inst in instances]
        if field.kind in ("tensor", "image"):
            shapes = {v.shape for v in values}
            columns[field.name] = np.stack(values) if len(shapes) == 1 else values
        elif field.kind in ("str", "category"):
            column = np.empty(len(values), dtype=object)
            column[:] = values
            columns[field.name] = column
        else:
            columns[field.name] = np.asarray(values, dtype=field.dtype)
    return columns


def split_outputs(spec: OutputSpec, result: Any, n: int, function: str) -> list[Any]:
    """The function's batch result as ``n`` JSON-ready predictions, in order."""
    return Outputs.of(result, n, function).predictions()


Inputs = Mapping[str, Any] | Rows  # a request's rows: one column per input, or instances


def stack_parts(schema: Schema, parts: Sequence[Inputs]) -> dict[str, Any]:
    """Several requests' inputs (columns, or :class:`Rows`) as one batch of columns."""
    rows = [p for p in parts if isinstance(p, Rows)]
    if len(rows) == len(parts):
        return to_columns(schema, [row for part in rows for row in part])
    return concat_columns([to_columns(schema, p) if isinstance(p, Rows) else p for p in parts])


def concat_columns(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several requests' columns as one batch (same inputs, same instance shapes)."""
    if len(parts) == 1:
        return dict(parts[0])
    # images of free size travel as lists of arrays; concat_column keeps them lists
    return {name: concat_column([p[name] for p in parts]) for name in parts[0]}


def slice_columns(columns: Inputs, start: int, stop: int) -> Inputs:
    if isinstance(columns, Rows):
        return Rows(columns[start:stop])
    return {name: column[start:stop] for name, column in columns.items()}


def _names(schema: Schema) -> str:
    return ", ".join(f.name for f in schema.inputs)


def _shape(field: InputField) -> str:
    return "[" + ", ".join("*" if d is None else str(d) for d in field.shape) + "]"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__

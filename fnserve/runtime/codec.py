"""Pure decoding and validation: request values in, numpy columns out, predictions back.

Nothing here touches asyncio or HTTP, so every rule is unit-tested directly. Each error is
a ``ValidationError`` that names the field (and the instance, in a batch) and what was
expected; the rules and their words are :mod:`fnserve.runtime.rules`'. A request is checked
until its first problem; only then is it walked again to name every problem in one answer, so
a good request pays nothing for that.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

import numpy as np
import simplejpeg
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from fnserve.runtime import rules
from fnserve.runtime.errors import BadRequest, Problem, Problems, ValidationError
from fnserve.runtime.outputs import concat_column
from fnserve.runtime.schema import InputField, Schema

MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs before decoding them
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def query_items(query_string: bytes) -> list[tuple[str, str]]:
    """A raw query string's ``(name, value)`` pairs, as Starlette's ``QueryParams`` reads them,
    except that text which is not UTF-8 is refused (400 naming it), not replaced with U+FFFD.

    The common case (ASCII, no escapes) is split directly: this runs for every GET prediction,
    and ``urllib.parse.parse_qsl`` costs several times more.

    >>> query_items(b"a=1&b=x%20y&flag&c=caf%C3%A9")
    [('a', '1'), ('b', 'x y'), ('flag', ''), ('c', 'café')]
    >>> query_items(b"user_country=%FF")
    Traceback (most recent call last):
    ...
    fnserve.runtime.errors.BadRequest: user_country: not valid UTF-8 text
    """
    text = query_string.decode("latin-1")
    if "%" in text or "+" in text or not text.isascii():
        return _unquoted_items(query_string)
    return [(name, value) for name, _, value in (part.partition("=") for part in text.split("&") if part)]


def _unquoted_items(query_string: bytes) -> list[tuple[str, str]]:
    """``parse_qsl`` over bytes, decoding each name and value as strict UTF-8."""
    items, problems = [], []
    for part in query_string.split(b"&"):
        if not part:
            continue
        name, _, value = (unquote_to_bytes(p.replace(b"+", b" ")) for p in part.partition(b"="))
        try:
            key = name.decode()
        except UnicodeDecodeError:
            shown = name.decode(errors="backslashreplace")
            problems.append(Problem(shown, f"parameter name is {rules.NOT_UTF8}"))
            continue
        try:
            items.append((key, value.decode()))
        except UnicodeDecodeError:
            problems.append(Problem(key, rules.NOT_UTF8))
    if problems:
        raise BadRequest.of(problems, len(problems))
    return items


def parse_query(
    schema: Schema,
    items: Sequence[tuple[str, str]],
    values: Mapping[str, Any] | None = None,
    defaulted: list[str] | None = None,
) -> dict[str, Any]:
    """One instance from query parameters (``GET /function/{name}?a=1&b=x``), and from ``values``:
    inputs given otherwise (the bytes of a raw image body). Several problems: one error naming
    them all. The names of inputs filled with their default are appended to ``defaulted``."""
    raw: dict[str, Any] = {}
    for key, value in items:
        field = schema.field(key)
        if field is None or key in raw or field.kind == "image":
            raise _query_problems(schema, items, values)
        raw[key] = value
    if values:
        raw.update(values)
    instance: dict[str, Any] = {}
    try:
        for field in schema.inputs:  # one pass: convert, check, fill defaults
            text = raw.get(field.name)
            if text is None and defaulted is not None and not field.required:
                defaulted.append(field.name)
            instance[field.name] = checked_or_default(
                field, None if text is None else from_text(field, text), field.name
            )
    except ValidationError:
        raise _query_problems(schema, items, values) from None
    return instance


class UncheckedQuery:
    """:func:`parse_query`'s instance without its checks, compiled once for a schema: the values
    in the schema's order and the names of the inputs filled with their defaults, or None for a
    query that parse_query would refuse or must check (a parameter that is unknown, repeated,
    an image or a tensor, or not text of its kind; a required input left out).

    For a caller that knows the answer is valid otherwise: a lookup-table hit, whose rows were
    checked when the table was read. The values are parse_query's (its checks return a valid
    scalar unchanged), so the table key and the ETag are too.

    >>> from fnserve.runtime.schema import InputField
    >>> parse = UncheckedQuery((InputField("n", "int", True), InputField("f", "float", False, 0.5)))
    >>> parse(b"n=3"), parse(b"f=1.5&n=%33")
    (([3, 0.5], ['f']), ([3, 1.5], []))
    >>> parse(b"n=3&n=4") is None, parse(b"f=1") is None, parse(b"n=x") is None, parse(b"n=%FF") is None
    (True, True, True, True)
    """

    __slots__ = ("at", "defaults", "names", "parsers", "required")

    def __init__(self, fields: Sequence[InputField]):
        self.names = tuple(f.name for f in fields)
        self.at = {f.name: i for i, f in enumerate(fields) if f.kind not in ("image", "tensor")}
        self.parsers = tuple(TEXT_PARSERS.get(f.kind) for f in fields)
        self.defaults = tuple(f.default for f in fields)
        self.required = tuple(f.required for f in fields)

    def __call__(self, query_string: bytes) -> tuple[list[Any], list[str]] | None:
        text = query_string.decode("latin-1")
        if "%" in text or "+" in text or not text.isascii():
            try:
                parts = [(name, "=", value) for name, value in query_items(query_string)]
            except BadRequest:
                return None
        else:  # query_items' common case, split here: this is the hot path of a table hit
            parts = [part.partition("=") for part in text.split("&")]
        at, parsers = self.at, self.parsers
        values = list(self.defaults)
        given = [False] * len(values)
        for name, sep, value in parts:
            if not name and not sep:
                continue  # an empty parameter (a=1&&b=2): query_items skips it too
            i = at.get(name)
            if i is None or given[i]:
                return None
            given[i] = True
            parse = parsers[i]
            if parse is None:
                values[i] = value
            else:
                try:
                    values[i] = parse(value)
                except ValueError:
                    return None
        if all(given):
            return values, []
        if any(r and not g for r, g in zip(self.required, given, strict=True)):
            return None
        return values, [name for name, g in zip(self.names, given, strict=True) if not g]


def _query_problems(
    schema: Schema, items: Sequence[tuple[str, str]], values: Mapping[str, Any] | None
) -> ValidationError:
    """Every problem of a query, once :func:`parse_query` has met the first."""
    problems = Problems()
    raw: dict[str, Any] = {}
    named: set[str] = set()  # parameters with a problem of their own: their values are not checked
    for key, value in items:
        field = schema.field(key)
        if field is None:
            problem = rules.unknown(schema, "parameter")
        elif key in raw or key in named:
            problem = "given more than once"
        elif field.kind == "image":
            problem = "images cannot be sent as query parameters; POST the image bytes"
        else:
            raw[key] = value
            continue
        if key not in named:
            named.add(key)
            problems.add(ValidationError.at(key, problem))
    raw.update(values or {})
    for field in schema.inputs:
        if field.name not in named:
            with problems:
                text = raw.get(field.name)
                checked_or_default(field, None if text is None else from_text(field, text), field.name)
    return problems.error()


def _bool_text(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


# A scalar's query text to its value (ValueError for text that is not one); str and category
# are the text itself.
TEXT_PARSERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "bool": _bool_text}


def from_text(field: InputField, text: str) -> Any:
    """Query values are text: turn them into the JSON-like value the field expects."""
    parse = TEXT_PARSERS.get(field.kind)
    if parse is not None:
        try:
            return parse(text)
        except ValueError:
            raise ValidationError.at(field.name, rules.expected(field.kind, repr(text))) from None
    if field.kind == "tensor":
        parts = text.strip("[]").split(",") if text.strip("[]") else []
        try:
            return [float(p) for p in parts]
        except ValueError:
            raise ValidationError.at(field.name, f"expected comma-separated numbers, got {text!r}") from None
    return text


def validate_instance(schema: Schema, instance: Any, where: str = "") -> dict[str, Any]:
    """Check one instance (a JSON object) against the schema; fill defaults. Several problems:
    one error naming them all."""
    if not isinstance(instance, Mapping):
        raise ValidationError.at(
            where.rstrip(".") or "body", f"expected a JSON object of inputs, got {rules.describe(instance)}"
        )
    for key in instance:
        if schema.field(key) is None:
            raise _instance_problems(schema, instance, where)
    try:
        return {f.name: checked_or_default(f, instance.get(f.name), where + f.name) for f in schema.inputs}
    except ValidationError:
        raise _instance_problems(schema, instance, where) from None


def _instance_problems(schema: Schema, instance: Mapping[str, Any], where: str) -> ValidationError:
    """Every problem of an instance, once :func:`validate_instance` has met the first."""
    problems = Problems()
    for key in instance:
        if schema.field(key) is None:
            problems.add(ValidationError.at(f"{where}{key}", rules.unknown(schema)))
    for field in schema.inputs:
        with problems:
            checked_or_default(field, instance.get(field.name), where + field.name)
    return problems.error()


def checked_or_default(field: InputField, value: Any, label: str) -> Any:
    """``value`` checked for ``field``; when absent (None), the field's default, or an error if
    it is required."""
    if value is None:
        if field.required:
            raise ValidationError.at(label, rules.missing(field))
        return field.default
    return check_value(field, value, label)


def check_value(field: InputField, value: Any, label: str) -> Any:
    """One JSON value checked and converted for ``field``; ``label`` names it in errors."""
    kind = field.kind
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError.at(label, rules.expected(kind, rules.describe(value)))
        if not rules.INT64_MIN <= value < rules.INT64_END:
            raise ValidationError.at(label, rules.int64_overflow(value))
        return _bounded(field, value, label)
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValidationError.at(label, rules.expected(kind, rules.describe(value)))
        value = float(value)
        if not math.isfinite(value) and not (field.constraint and field.constraint.allow_nan):
            raise ValidationError.at(label, rules.not_finite(value))
        return _bounded(field, value, label)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValidationError.at(label, rules.expected(kind, rules.describe(value)))
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValidationError.at(label, rules.expected(kind, rules.describe(value)))
        return value
    if kind == "category":
        if value not in field.choices:
            raise ValidationError.at(label, rules.not_a_choice(field.choices, value))
        return value
    if kind == "tensor":
        return _tensor(field, value, label)
    if isinstance(value, np.ndarray):  # already decoded (raw image body)
        return value
    return decode_image(field, image_bytes(value, label), label)


def _bounded(field: InputField, value: float, label: str) -> Any:
    c = field.constraint
    # The bounds inline, rules.outside() only to word a hit: a call per bounded value costs ~2%
    # of a GET's parse.
    if c is None or not math.isfinite(value):
        return value
    if (c.ge is not None and value < c.ge) or (c.le is not None and value > c.le):
        raise ValidationError.at(label, rules.outside(c, value))
    return value


def _tensor(field: InputField, value: Any, label: str) -> np.ndarray:
    assert field.tensor is not None
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value, dtype=np.float64 if field.tensor.dtype != "bool" else bool)
        except (ValueError, TypeError):
            raise ValidationError.at(
                label, f"expected a nested list of numbers of shape {rules.shape_text(field.shape)}"
            ) from None
    if array.ndim != len(field.shape) or any(
        want is not None and want != got for want, got in zip(field.shape, array.shape, strict=True)
    ):
        raise ValidationError.at(label, rules.wrong_shape(field, array.shape))
    nan_allowed = rules.nan_ok(field)
    if array.dtype.kind == "f" and not nan_allowed and not np.isfinite(array).all():
        raise ValidationError.at(label, rules.TENSOR_NOT_FINITE)
    dtype = field.tensor.dtype
    integral = dtype.startswith(("int", "uint"))
    if integral and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise ValidationError.at(label, rules.not_integral(dtype))
    # The cast below would silently wrap out-of-range integers (300 -> 44 in uint8) and turn
    # large floats into infinity: refuse such values instead of handing the model wrong ones.
    if integral and array.size:
        low, high = rules.integer_range(dtype)
        if array.min() < low or array.max() >= high + 1:  # `>= high + 1`: exact for float64
            raise ValidationError.at(label, rules.out_of_range(dtype))
    with np.errstate(over="ignore"):
        converted = array.astype(dtype, copy=False)
    if converted.dtype.kind == "f" and not nan_allowed and not np.isfinite(converted).all():
        raise ValidationError.at(label, rules.too_large(dtype))
    return converted


def image_bytes(value: Any, label: str) -> bytes:
    """Images in JSON are base64 text or ``{"b64": "..."}`` (TF Serving's binary convention)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Mapping) and set(value) == {"b64"}:
        value = value["b64"]
    if not isinstance(value, str):
        raise ValidationError.at(label, f"expected a base64-encoded image, got {rules.describe(value)}")
    if value.startswith("data:") and "," in value:  # data URLs as produced by browsers
        value = value.split(",", 1)[1]
    try:
        # Line breaks are common (the `base64` tool wraps at 76 columns); other junk is an error.
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError.at(label, "not valid base64") from None


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
        expected = "expected JPEG, PNG, GIF, BMP or WebP"
        raise ValidationError.at(label, f"not a decodable image ({expected})") from None
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
        raise ValidationError.at(label, f"image of {width}x{height} pixels is too large")


class Rows(list[dict[str, Any]]):
    """Validated instances whose columns are built once per batch rather than once per request.

    A one-instance request (a GET) hands these to the batcher; the model thread stacks every
    waiting instance into columns at once, which costs far less than a one-row column per
    request plus a concatenation of them all. ``defaulted``: as :class:`Columns`.
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), defaulted: Mapping[str, int] | None = None):
        super().__init__(rows)
        self.defaulted: Mapping[str, int] = defaulted or {}


class Columns(dict[str, Any]):
    """Checked columns that also say how many of their rows each input's default filled
    (``defaulted``: input name to a count; the monitor's defaulted share). A count, not a mask:
    the batch cannot tell a filled default from a sent one, and counting costs nothing per row."""

    def __init__(self, columns: Mapping[str, Any], defaulted: Mapping[str, int] | None = None):
        super().__init__(columns)
        self.defaulted: Mapping[str, int] = defaulted or {}


def defaulted_of(parts: Iterable[Any]) -> dict[str, int]:
    """The summed defaulted counts of several requests' inputs (one dict per request)."""
    total: dict[str, int] = {}
    for part in parts:
        for name, count in getattr(part, "defaulted", {}).items():
            total[name] = total.get(name, 0) + count
    return total


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


Inputs = Mapping[str, Any] | Rows  # a request's rows: one column per input, or instances


def stack_parts(schema: Schema, parts: Sequence[Inputs]) -> Columns:
    """Several requests' inputs (columns, or :class:`Rows`) as one batch of columns."""
    rows = [p for p in parts if isinstance(p, Rows)]
    if len(rows) == len(parts):
        stacked = to_columns(schema, [row for part in rows for row in part])
    else:
        stacked = concat_columns([to_columns(schema, p) if isinstance(p, Rows) else p for p in parts])
    return Columns(stacked, defaulted_of(parts))


def concat_columns(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several requests' columns as one batch (same inputs, same instance shapes)."""
    if len(parts) == 1:
        return dict(parts[0])
    # images of free size travel as lists of arrays; concat_column keeps them lists
    return {name: concat_column([p[name] for p in parts]) for name in parts[0]}


def slice_columns(columns: Inputs, start: int, stop: int) -> Inputs:
    """Rows ``start:stop``; the defaulted counts go with the first slice (the monitor sums them
    over its window, so where in a request they fall does not matter)."""
    defaulted = getattr(columns, "defaulted", None) if start == 0 else None
    if isinstance(columns, Rows):
        return Rows(columns[start:stop], defaulted)
    return Columns({name: column[start:stop] for name, column in columns.items()}, defaulted)

"""Pure decoding: query text and JSON values in, validated instances and numpy columns out."""

import base64
import io
from typing import Annotated, Any, Literal

import numpy as np
import pytest
from PIL import Image as PILImage

from fnserve import Field, Image, Tensor
from fnserve.runtime import codec
from fnserve.runtime.errors import ModelError, ValidationError
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.schema import Schema


def demo(
    count: Annotated[int, Field(ge=0, le=100)],
    ratio: float,
    flag: bool,
    season: Literal["winter", "summer"],
    vector: Tensor[np.float32, 3],
    note: str = "none",
    maybe: Annotated[float, Field(allow_nan=True)] = 0.0,
) -> float:
    return 0.0


def pictured(photo: Image[4, 6], ids: Tensor[np.int64, None]) -> float:
    return 0.0


SCHEMA = Schema.from_function(demo, has_model=False, where="demo")
PICTURED = Schema.from_function(pictured, has_model=False, where="pictured")
GOOD: dict[str, Any] = {"count": 3, "ratio": 0.5, "flag": True, "season": "summer", "vector": [1, 2, 3]}
QUERY = {"count": "3", "ratio": "0.5", "flag": "true", "season": "summer", "vector": "1,2,3"}


def png(width: int = 8, height: int = 8, color: tuple[int, int, int] = (200, 100, 0)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def invalid(instance: Any, match: str, schema: Schema = SCHEMA, where: str = "") -> None:
    with pytest.raises(ValidationError, match=match) as info:
        codec.validate_instance(schema, instance, where)
    assert info.value.status == 422


# --- query parameters ---------------------------------------------------------------------------


def test_query_values_are_parsed_by_type_and_defaults_filled() -> None:
    items = [("count", "7"), ("ratio", "2.5"), ("flag", "yes"), ("season", "winter"), ("vector", "1,2,3")]
    instance = codec.parse_query(SCHEMA, items)
    assert {k: v for k, v in instance.items() if k != "vector"} == {
        "count": 7, "ratio": 2.5, "flag": True, "season": "winter", "note": "none", "maybe": 0.0,
    }  # fmt: skip
    assert instance["vector"].dtype == np.float32 and instance["vector"].tolist() == [1, 2, 3]


@pytest.mark.parametrize(("word", "value"), [("true", True), ("ON", True), ("1", True), ("False", False),
                                             ("no", False), ("0", False), ("off", False)])  # fmt: skip
def test_query_bool_words(word: str, value: bool) -> None:
    instance = codec.parse_query(SCHEMA, [*{**QUERY, "flag": word}.items()])
    assert instance["flag"] is value


@pytest.mark.parametrize(
    ("key", "text", "match"),
    [("count", "1.5", "count: expected an integer"), ("ratio", "abc", "ratio: expected a number"),
     ("flag", "maybe", "flag: expected true or false"), ("vector", "1,x,3", "vector: expected comma")],
)  # fmt: skip
def test_query_value_of_the_wrong_type_names_the_field(key: str, text: str, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        codec.parse_query(SCHEMA, [*{**QUERY, key: text}.items()])


def test_query_unknown_parameter_is_named() -> None:
    with pytest.raises(ValidationError, match=r"^colour: unknown parameter; expected count, ratio, flag"):
        codec.parse_query(SCHEMA, [*QUERY.items(), ("colour", "red")])


def test_query_repeated_parameter_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"^ratio: given more than once$"):
        codec.parse_query(SCHEMA, [*QUERY.items(), ("ratio", "2")])


def test_query_images_are_refused() -> None:
    with pytest.raises(ValidationError, match="photo: images cannot be sent as query"):
        codec.parse_query(PICTURED, [("photo", "abc")])


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"count": "3"}, r"^count: expected an integer, got string"),
        ({"count": True}, "^count: expected an int"),
        ({"count": 2**63}, "^count: .* 64-bit"),
        ({"count": -1}, r"^count: must be >= 0"),
        ({"count": 101}, "^count: must be <= 100"),
        ({"ratio": "x"}, "^ratio: expected a number"),
        ({"flag": 1}, "^flag: expected true or false"),
        ({"note": 5}, "^note: expected a string"),
        ({"season": "spring"}, "^season: expected one of winter, summer, got 'spring'"),
        ({"vector": "abc"}, r"^vector: expected .*shape \[3\]"),
        ({"vector": [1, "a", 3]}, "^vector: expected a"),
        ({"vector": [1, 2]}, r"^vector: expected shape \[3\], got \[2\]"),
        ({"vector": [[1, 2, 3]]}, r"^vector: expected shape \[3\], got \[1, 3\]"),
        ({"ratio": float("nan")}, "^ratio: expected a finite number"),
        ({"ratio": float("inf")}, "^ratio: expected a finite number"),
        ({"vector": [1, float("nan"), 3]}, "^vector: expected finite numbers"),
    ],
)
def test_every_invalid_value_names_its_field(change: dict[str, Any], match: str) -> None:
    invalid({**GOOD, **change}, match)


def test_missing_required_input_is_named() -> None:
    invalid({k: v for k, v in GOOD.items() if k != "season"}, r"^season: missing required input \(category\)")


def test_null_counts_as_missing() -> None:
    invalid({**GOOD, "ratio": None}, "^ratio: missing required input")


def test_unknown_input_is_named() -> None:
    invalid({**GOOD, "colour": "red"}, "^colour: unknown input; expected count, ratio")


def test_non_object_instance_is_refused() -> None:
    invalid([1, 2], "^body: expected a JSON object of inputs, got a list")


def test_batch_errors_carry_the_instance_prefix() -> None:
    invalid({**GOOD, "count": "x"}, r"^instances\[7\]\.count: expected an integer", where="instances[7].")
    invalid({**GOOD, "new": 1}, r"^instances\[2\]\.new: unknown input", where="instances[2].")
    invalid(3, r"^instances\[0\]: expected a JSON object of inputs, got number 3$", where="instances[0].")


def test_nan_is_accepted_where_the_field_allows_it() -> None:
    instance = codec.validate_instance(SCHEMA, {**GOOD, "maybe": float("nan")})
    assert np.isnan(instance["maybe"])


def test_integral_floats_are_accepted_as_ints() -> None:
    assert codec.validate_instance(SCHEMA, {**GOOD, "count": 4.0})["count"] == 4


def test_integer_tensor_refuses_fractions() -> None:
    invalid({"photo": base64.b64encode(png()).decode(), "ids": [1.5]}, r"^ids: expected integers", PICTURED)


def test_variable_length_tensor_accepts_any_length() -> None:
    for ids in ([1], [1, 2, 3, 4]):
        instance = codec.validate_instance(PICTURED, {"photo": base64.b64encode(png()).decode(), "ids": ids})
        assert instance["ids"].dtype == np.int64 and instance["ids"].tolist() == ids


# --- images -------------------------------------------------------------------------------------

PHOTO = PICTURED.inputs[0]
B64 = base64.b64encode(png()).decode()


@pytest.mark.parametrize("value", [B64, {"b64": B64}, f"data:image/png;base64,{B64}", png()])
def test_image_forms_decode_and_resize_to_the_declared_size(value: Any) -> None:
    array = codec.check_value(PHOTO, value, "photo")
    assert array.shape == (4, 6, 3) and array.dtype == np.uint8
    assert array[0, 0].tolist() == [200, 100, 0]


def test_grayscale_image_is_converted_to_rgb() -> None:
    out = io.BytesIO()
    PILImage.new("L", (4, 6), 90).save(out, format="JPEG")
    array = codec.check_value(PHOTO, out.getvalue(), "photo")
    assert array.shape == (4, 6, 3)


def test_bad_base64_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"^photo: not valid base64"):
        codec.check_value(PHOTO, "not base64!!", "photo")


def test_undecodable_image_bytes_name_the_field() -> None:
    with pytest.raises(ValidationError, match=r"^photo: not a decodable image"):
        codec.check_value(PHOTO, base64.b64encode(b"hello, not an image").decode(), "photo")


def test_image_of_the_wrong_json_type_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"^photo: expected a base64-encoded image, got number"):
        codec.check_value(PHOTO, 12, "photo")


# --- columns and outputs ------------------------------------------------------------------------


def test_to_columns_gives_one_typed_column_per_input() -> None:
    instances = [codec.validate_instance(SCHEMA, {**GOOD, "count": i, "note": f"n{i}"}) for i in range(3)]
    columns = codec.to_columns(SCHEMA, instances)
    assert columns["count"].dtype == np.int64 and columns["count"].tolist() == [0, 1, 2]
    assert columns["ratio"].dtype == np.float64 and columns["flag"].dtype == np.bool_
    assert columns["season"].dtype == object and columns["note"].tolist() == ["n0", "n1", "n2"]
    assert columns["vector"].dtype == np.float32 and columns["vector"].shape == (3, 3)


def test_to_columns_stacks_images_and_keeps_ragged_tensors_as_a_list() -> None:
    instances = [codec.validate_instance(PICTURED, {"photo": B64, "ids": list(range(n))}) for n in (1, 2)]
    columns = codec.to_columns(PICTURED, instances)
    assert columns["photo"].shape == (2, 4, 6, 3) and columns["photo"].dtype == np.uint8
    assert isinstance(columns["ids"], list) and [a.tolist() for a in columns["ids"]] == [[0], [0, 1]]


def predictions(result: Any, n: int) -> list[Any]:
    """A batch result as the JSON-ready predictions the runtime answers with."""
    return Outputs.of(result, n, "f").predictions()


def test_outputs_of_an_array() -> None:
    out = predictions(np.array([1.5, 2.5], dtype=np.float32), 2)
    assert out == [1.5, 2.5] and all(type(v) is float for v in out)


def test_outputs_of_a_list_turns_numpy_values_into_json() -> None:
    out = predictions([np.int64(1), np.array([1, 2]), float("nan")], 3)
    assert out == [1, [1, 2], None]


def test_outputs_of_a_dict_of_columns_gives_one_dict_per_instance() -> None:
    result = {"label": np.array(["a", "b"]), "score": [0.1, 0.9]}
    assert predictions(result, 2) == [
        {"label": "a", "score": 0.1},
        {"label": "b", "score": 0.9},
    ]


def test_outputs_of_a_list_of_dicts() -> None:
    result = [{"label": "a", "score": np.float32(0.5)}, {"label": "b", "score": 1}]
    assert predictions(result, 2) == [
        {"label": "a", "score": 0.5},
        {"label": "b", "score": 1},
    ]


@pytest.mark.parametrize("result", [[1.0], np.zeros(3), {"score": [1.0]}])
def test_wrong_number_of_outputs_is_a_model_error(result: Any) -> None:
    with pytest.raises(ModelError, match=r"function 'f' returned \d values .* for 2 instances") as info:
        predictions(result, 2)
    assert info.value.status == 500


def test_scalar_output_for_a_batch_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="returned float64 as output; expected a batch"):
        predictions(np.float64(3.0), 1)


def ranged(small: Tensor[np.uint8, 2], big: Tensor[np.int64, 1], half: Tensor[np.float16, 1]) -> float:
    return 0.0


RANGED = Schema.from_function(ranged, has_model=False, where="ranged")


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("small", [300, 1], r"^small: expected integers from 0 to 255 \(uint8\)"),
        ("small", [-1, 1], r"^small: expected integers from 0 to 255"),
        ("big", [2**63], r"^big: expected integers from -9223372036854775808 to 9223372036854775807"),
        ("half", [70000.0], r"^half: a value is too large for float16"),
    ],
)
def test_tensor_values_out_of_the_dtype_range_are_refused_not_wrapped(
    name: str, value: Any, match: str
) -> None:
    field = RANGED.field(name)
    assert field is not None
    with pytest.raises(ValidationError, match=match):
        codec.check_value(field, value, name)


def test_tensor_values_at_the_dtype_limits_are_kept() -> None:
    field = RANGED.field("small")
    assert field is not None
    assert codec.check_value(field, [0, 255], "small").tolist() == [0, 255]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"a=1&b=2",
        b"a=1&&b=",
        b"flag&a=x=y",
        b"name=caf%C3%A9&q=a+b",
        b"a=%zz&b=%41",
        b"&a=1&",
        b"a=%2B+%26&=v&%3D=%3d",
    ],
)
def test_query_items_read_the_query_string_as_starlette_does(raw: bytes) -> None:
    from starlette.datastructures import QueryParams

    assert codec.query_items(raw) == QueryParams(raw.decode("latin-1")).multi_items()


def test_rows_are_stacked_per_batch_like_columns_per_request() -> None:
    rows = [codec.validate_instance(SCHEMA, {**GOOD, "count": i}) for i in range(5)]
    as_columns = codec.to_columns(SCHEMA, rows)
    mixed = [codec.Rows(rows[:2]), codec.to_columns(SCHEMA, rows[2:3]), codec.Rows(rows[3:])]
    for parts in (mixed, [codec.Rows(rows[:2]), codec.Rows(rows[2:])]):
        stacked = codec.stack_parts(SCHEMA, parts)
        assert stacked.keys() == as_columns.keys()
        for name, column in as_columns.items():
            assert stacked[name].dtype == column.dtype and np.array_equal(stacked[name], column)
    assert codec.slice_columns(codec.Rows(rows), 1, 3) == codec.Rows(rows[1:3])


def photo_jpeg(width: int, height: int, *, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(width * height)
    ramp = np.linspace(0, 255, width)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255)
    out = io.BytesIO()
    PILImage.fromarray(pixels.astype(np.uint8)).convert(mode).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.mark.parametrize(("width", "height"), [(6, 4), (64, 48), (13, 7)])
def test_jpegs_decode_through_libjpeg_turbo_as_pil_decodes_them(width: int, height: int) -> None:
    field = PICTURED.inputs[0]  # Image[4, 6]
    data = photo_jpeg(width, height)
    fast = codec.decode_image(field, data, "photo")
    with PILImage.open(io.BytesIO(data)) as opened:
        reference = np.asarray(opened.convert("RGB").resize((6, 4), PILImage.Resampling.BILINEAR))
    assert fast.shape == (4, 6, 3) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - reference.astype(int)).max() <= 2  # same library, same answer


def test_jpegs_the_fast_decoder_refuses_still_decode_or_are_named() -> None:
    field = PICTURED.inputs[0]
    cmyk = photo_jpeg(6, 4, mode="CMYK")  # simplejpeg will not turn CMYK into RGB; PIL does
    assert codec.decode_image(field, cmyk, "photo").shape == (4, 6, 3)
    with pytest.raises(ValidationError, match="photo: not a decodable image"):
        codec.decode_image(field, photo_jpeg(6, 4)[:40], "photo")  # truncated

"""Whole-column validation: every rule of the per-value codec, as numpy operations, naming the row."""

import base64
import io
from typing import Annotated, Any, Literal

import numpy as np
import pytest
from PIL import Image as PILImage

from fnserve import Field, Image, Tensor
from fnserve.runtime import codec, columns
from fnserve.runtime.errors import PayloadTooLarge, ValidationError
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


def pictured(photo: Image[4, 6], ids: Tensor[np.int64, None], small: Tensor[np.uint8, 2]) -> float:
    return 0.0


SCHEMA = Schema.from_function(demo, has_model=False, where="demo")
PICTURED = Schema.from_function(pictured, has_model=False, where="pictured")
GOOD: dict[str, Any] = {"count": 3, "ratio": 0.5, "flag": True, "season": "summer", "vector": [1, 2, 3]}


def field(name: str) -> Any:
    found = SCHEMA.field(name) or PICTURED.field(name)
    assert found is not None
    return found


def png(width: int = 8, height: int = 8) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (200, 100, 0)).save(out, format="PNG")
    return out.getvalue()


# --- numpy columns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "column", "message"),
    [
        ("count", np.array([1, 2, 101]), "count[2]: must be <= 100, got 101"),
        ("count", np.array([5.0, -3.0]), "count[1]: must be >= 0, got -3"),
        ("count", np.array([1.0, 2.5]), "count[1]: expected an integer, got number 2.5"),
        ("count", np.array([1, 2**64 - 1], dtype=np.uint64), "count[1]: 18446744073709551615 does not fit"),
        ("count", np.array([True]), "count[0]: expected an integer, got booleans"),
        ("ratio", np.array([0.5, np.nan]), "ratio[1]: expected a finite number, got nan"),
        ("ratio", np.array([np.inf]), "ratio[0]: expected a finite number, got inf"),
        ("ratio", np.array(["1.0"]), "ratio[0]: expected a number, got strings"),
        ("flag", np.array([1, 0]), "flag[0]: expected true or false, got int64 values"),
        (
            "season",
            np.array(["summer", "winter", "spring"], dtype=object),
            "season[2]: expected one of winter, summer, got 'spring'",
        ),
        ("note", np.array([1.5]), "note[0]: expected a string, got float64 values"),
        ("vector", np.ones((2, 4)), "vector[0]: expected shape [3], got [4]"),
        ("vector", np.array([[1, 2, 3], [1, np.nan, 3]]), "vector[1]: expected finite numbers, got NaN"),
        ("vector", np.array([[1, 2, 3], [1, 1e300, 3]]), "vector[1]: a value is too large for float32"),
        ("small", np.array([[1, 2], [3, 300]]), "small[1]: expected integers from 0 to 255 (uint8)"),
        ("small", np.array([[1, 2], [3, 0.5]]), "small[1]: expected integers (uint8)"),
        ("small", np.array([[True, False]]), "small[0]: expected uint8 values, got booleans"),
    ],
)
def test_a_bad_column_names_the_input_and_the_first_bad_row(name: str, column: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        columns.check(field(name), column)
    assert info.value.message.startswith(message) and info.value.status == 422


def test_a_float_bound_error_reads_like_the_codec_one() -> None:
    def hotels(hotel_price: Annotated[float, Field(ge=0)]) -> float:
        return 0.0

    price = Schema.from_function(hotels, has_model=False, where="hotels").inputs[0]
    column = np.full(20, 99.0)
    column[17] = -3.0
    with pytest.raises(ValidationError, match=r"^hotel_price\[17\]: must be >= 0, got -3.0$"):
        columns.check(price, column)


def test_good_columns_come_back_in_the_fields_dtype() -> None:
    assert columns.check(field("count"), np.array([1.0, 2.0], dtype=np.float32)).dtype == np.int64
    assert columns.check(field("count"), np.array([7], dtype=np.uint8)).tolist() == [7]
    assert columns.check(field("ratio"), np.array([1, 2], dtype=np.int16)).dtype == np.float64
    assert columns.check(field("maybe"), np.array([np.nan])).size == 1  # allow_nan
    assert columns.check(field("season"), np.array(["winter"])).dtype == object
    vector = columns.check(field("vector"), np.ones((4, 3)))
    assert vector.dtype == np.float32 and vector.shape == (4, 3)


def test_a_column_already_in_the_right_dtype_is_not_copied() -> None:
    ratio = np.array([0.5, 1.5])
    vector = np.ones((2, 3), dtype=np.float32)
    assert columns.check(field("ratio"), ratio) is ratio
    assert columns.check(field("vector"), vector) is vector


def test_a_label_may_place_the_row() -> None:
    with pytest.raises(ValidationError, match=r"^instances\[1\]\.count: must be <= 100, got 200$"):
        columns.check(field("count"), np.array([1, 200]), "instances[{row}].count")


# --- JSON lists -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("count", [1, True], r"count\[1\]: expected an integer, got boolean true"),
        ("count", [1, "2"], r"count\[1\]: expected an integer, got string '2'"),
        ("count", [1, 2**70], r"count\[1\]: 1180591620717411303424 does not fit in a 64-bit integer"),
        ("count", [1, 2.5], r"count\[1\]: expected an integer, got number 2.5"),
        ("ratio", [0.5, None], r"ratio\[1\]: missing required input \(float\)"),
        ("ratio", [0.5, [1]], r"ratio\[1\]: expected a number, got a list"),
        ("flag", [True, 1], r"flag\[1\]: expected true or false, got number 1"),
        ("season", ["winter", 3], r"season\[1\]: expected one of winter, summer, got 3"),
        ("vector", [[1, 2, 3], [1, 2]], r"vector\[1\]: expected shape \[3\], got \[2\]"),
        ("vector", [[1, 2, 3], [1, "a", 3]], r"vector\[1\]: expected a nested list of numbers"),
        ("vector", "abc", "vector: expected a list with one value per row, got string 'abc'"),
    ],
)
def test_json_values_are_checked_exactly_per_column(name: str, values: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        columns.from_json(field(name), values)


def test_json_columns_are_typed_and_nulls_take_the_default() -> None:
    assert columns.from_json(field("count"), [1, 2.0]).tolist() == [1, 2]
    assert columns.from_json(field("ratio"), [1, 2.5]).dtype == np.float64
    assert columns.from_json(field("note"), ["a", None]).tolist() == ["a", "none"]
    assert columns.from_json(field("flag"), [True, False]).dtype == bool
    assert columns.from_json(field("vector"), [[1, 2, 3]]).dtype == np.float32


def test_variable_length_tensors_stack_when_equal_and_stay_a_list_when_ragged() -> None:
    assert columns.from_json(field("ids"), [[1, 2], [3, 4]]).shape == (2, 2)
    ragged = columns.from_json(field("ids"), [[1, 2], [3]])
    assert [r.tolist() for r in ragged] == [[1, 2], [3]]


def test_images_decode_from_bytes_base64_and_b64_objects() -> None:
    text = base64.b64encode(png()).decode()
    photos = columns.images(field("photo"), [png(), text, {"b64": text}])
    assert photos.shape == (3, 4, 6, 3) and photos.dtype == np.uint8
    with pytest.raises(ValidationError, match=r"^photo\[1\]: not a decodable image"):
        columns.images(field("photo"), [png(), b"nope"])


# --- instances and whole requests -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 8, 300])
def test_instances_give_the_columns_the_codec_gives(n: int) -> None:
    instances = [{**GOOD, "count": i % 100, "note": f"n{i}"} for i in range(n)]
    got, rows = columns.from_instances(SCHEMA, instances)
    want = codec.to_columns(SCHEMA, [codec.validate_instance(SCHEMA, inst) for inst in instances])
    assert rows == n and list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].tolist() == want[name].tolist()


@pytest.mark.parametrize("n", [3, 30])  # both the per-instance and the per-column path
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": "x"}, r"^instances\[2\]\.count: expected an integer, got string 'x'"),
        ({"count": 101}, r"^instances\[2\]\.count: must be <= 100, got 101"),
        ({"ratio": float("nan")}, r"^instances\[2\]\.ratio: expected a finite number"),
        ({"colour": 1}, r"^instances\[2\]\.colour: unknown input; expected count"),
        ({"season": "spring"}, r"^instances\[2\]\.season: expected one of winter, summer, got 'spring'"),
        ({"vector": [1, 2]}, r"^instances\[2\]\.vector: expected shape \[3\], got \[2\]"),
    ],
)
def test_instance_errors_read_the_same_on_both_paths(n: int, change: dict[str, Any], message: str) -> None:
    instances = [dict(GOOD) for _ in range(n)]
    instances[2].update(change)
    with pytest.raises(ValidationError, match=message):
        columns.from_instances(SCHEMA, instances)


def test_a_missing_input_in_one_instance_is_named() -> None:
    instances = [dict(GOOD) for _ in range(20)]
    del instances[5]["season"]
    with pytest.raises(
        ValidationError, match=r"^instances\[5\]\.season: missing required input \(category\)"
    ):
        columns.from_instances(SCHEMA, instances)


def test_a_non_object_instance_is_named() -> None:
    with pytest.raises(
        ValidationError, match=r"^instances\[9\]: expected a JSON object of inputs, got number 3"
    ):
        columns.from_instances(SCHEMA, [*(dict(GOOD) for _ in range(9)), 3])


def test_complete_fills_defaults_and_names_unknown_and_missing_inputs() -> None:
    given = {name: columns.from_json(field(name), [value]) for name, value in GOOD.items()}
    full = columns.complete(SCHEMA, given, 1)
    assert list(full) == [f.name for f in SCHEMA.inputs]
    assert full["note"].tolist() == ["none"] and full["maybe"].tolist() == [0.0]
    with pytest.raises(ValidationError, match=r"^colour: unknown input; expected count, ratio"):
        columns.complete(SCHEMA, {**given, "colour": None}, 1)
    with pytest.raises(ValidationError, match=r"^flag: missing required input \(bool\)"):
        columns.complete(SCHEMA, {k: v for k, v in given.items() if k != "flag"}, 1)


def test_row_limits() -> None:
    columns.check_rows(columns.MAX_ROWS, "body")
    with pytest.raises(PayloadTooLarge, match="body: 10001 rows is over the limit of 10000"):
        columns.check_rows(columns.MAX_ROWS + 1, "body")
    with pytest.raises(ValidationError, match="body: expected at least one row"):
        columns.check_rows(0, "body")

"""One answer names every bad input, whatever the protocol; text that is not UTF-8 is refused.

Also: the row-by-row checks (codec) and the whole-column checks (columns) word the same
violation the same way, since both take their rules from fnserve.runtime.rules.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pytest

from fnserve import Field, Tensor
from fnserve.runtime import codec, columns, errors
from fnserve.runtime.errors import BadRequest, ValidationError
from fnserve.runtime.schema import Schema

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}
GOOD = {"country": "NL", "day_of_week": 5, "season": "summer", "price": 120.0}
# a bad day, a bad season, no price, an unknown input: four problems, in schema order
BAD_QUERY = "country=NL&day_of_week=9&season=spring&colour=red"
BAD_PROBLEMS = [
    {"input": "colour", "error": "unknown {what}; expected country, day_of_week, season, price, stars"},
    {"input": "day_of_week", "error": "must be <= 7, got 9"},
    {"input": "season", "error": "expected one of winter, summer, got 'spring'"},
    {"input": "price", "error": "missing required input (float)"},
]


def problems_of(response: Any, status: int) -> tuple[str, list[dict[str, Any]]]:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error", "problems"]
    assert body["error"] == "; ".join(f"{p['input']}: {p['error']}" for p in body["problems"])
    return body["error"], body["problems"]


def expected(what: str, prefix: str = "", order: tuple[int, ...] = (0, 1, 2, 3)) -> list[dict[str, Any]]:
    return [
        {"input": prefix + BAD_PROBLEMS[i]["input"], "error": BAD_PROBLEMS[i]["error"].format(what=what)}
        for i in order
    ]


# --- every protocol ---------------------------------------------------------------------------------


def test_a_get_names_every_bad_and_missing_parameter(serve: Any) -> None:
    with serve("hotel") as client:
        response = client.get(f"/function/hotel?{BAD_QUERY}")
    assert problems_of(response, 422)[1] == expected("parameter")


def test_a_json_instance_names_every_bad_and_missing_input(serve: Any) -> None:
    instance = {"country": "NL", "day_of_week": 9, "season": "spring", "colour": "red"}
    with serve("hotel") as client:
        response = client.post("/function/hotel", json=instance)
    assert problems_of(response, 422)[1] == expected("input")


@pytest.mark.parametrize("n", [3, 30])  # the per-instance and the per-column path
def test_a_json_batch_names_every_bad_instance_by_index(serve: Any, n: int) -> None:
    instances: list[dict[str, Any]] = [dict(GOOD) for _ in range(n)]
    instances[1]["day_of_week"] = 0
    instances[2].update(price=-3, season="spring")
    del instances[2]["country"]
    with serve("hotel") as client:
        response = client.post("/function/hotel", json={"instances": instances})
    assert problems_of(response, 422)[0] == (
        "instances[1].day_of_week: must be >= 1, got 0; "
        "instances[2].country: missing required input (str); "
        "instances[2].season: expected one of winter, summer, got 'spring'; "
        "instances[2].price: must be >= 0, got -3.0"
    )


def test_v2_names_every_bad_and_missing_input_in_one_400(serve: Any) -> None:
    inputs = [
        {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["NL", "DE"]},
        {"name": "day_of_week", "shape": [2], "datatype": "INT64", "data": [9, 0]},
        {"name": "season", "shape": [2], "datatype": "BYTES", "data": ["summer", "spring"]},
        {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
    ]
    with serve("hotel") as client:
        response = client.post("/v2/models/hotel/infer", json={"inputs": inputs})
    assert problems_of(response, 400)[0] == (
        "day_of_week[0]: must be <= 7, got 9; day_of_week[1]: must be >= 1, got 0; "
        "season[1]: expected one of winter, summer, got 'spring'; "
        "colour: unknown input; expected country, day_of_week, season, price, stars; "
        "price: missing required input (float)"
    )


def test_tf_serving_names_every_problem_in_rows_and_in_columns(serve: Any) -> None:
    rows = {"instances": [{"country": "NL", "day_of_week": 9, "season": "spring", "colour": "red"}]}
    columnar = {"inputs": {"country": ["NL"], "day_of_week": [9], "season": ["spring"], "colour": ["red"]}}
    with serve("hotel") as client:
        by_rows = client.post("/v1/models/hotel:predict", json=rows)
        by_columns = client.post("/v1/models/hotel:predict", json=columnar)
    assert problems_of(by_rows, 400)[1] == expected("input", "instances[0].")
    assert problems_of(by_columns, 400)[0] == (
        "day_of_week[0]: must be <= 7, got 9; season[0]: expected one of winter, summer, got 'spring'; "
        "colour: unknown input; expected country, day_of_week, season, price, stars; "
        "price: missing required input (float)"
    )


def test_arrow_names_every_bad_unknown_and_missing_column(serve: Any) -> None:
    table = pa.table({
        "country": ["NL", "DE", "FR"],
        "day_of_week": pa.array([5, 9, 0], pa.int8()),
        "season": pa.array(["spring", "summer", "autumn"]).dictionary_encode(),
        "colour": ["red", "red", "red"],
    })  # fmt: skip
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with serve("hotel") as client:
        response = client.post("/function/hotel", content=sink.getvalue().to_pybytes(), headers=ARROW)
    assert problems_of(response, 422)[0] == (
        "day_of_week[1]: must be <= 7, got 9; day_of_week[2]: must be >= 1, got 0; "
        "season[0]: expected one of winter, summer, got 'spring'; "
        "season[2]: expected one of winter, summer, got 'autumn'; "
        "colour: unknown input; expected country, day_of_week, season, price, stars; "
        "price: missing required input (float)"
    )


def test_a_huge_bad_batch_names_the_first_problems_and_counts_the_rest(serve: Any) -> None:
    instances = [{**GOOD, "price": -1} for _ in range(5000)]
    with serve("hotel") as client:
        response = client.post("/function/hotel", json={"instances": instances})
    message, problems = problems_of_capped(response)
    assert (
        len(problems) == errors.MAX_PROBLEMS
        and problems[-1]["input"] == f"instances[{errors.MAX_PROBLEMS - 1}].price"
    )
    assert message.endswith(f"; and {5000 - errors.MAX_PROBLEMS} more") and len(message) < 2000


def problems_of_capped(response: Any) -> tuple[str, list[dict[str, Any]]]:
    assert response.status_code == 422, response.text
    body = response.json()
    return body["error"], body["problems"]


def test_a_single_problem_keeps_the_plain_error_shape(serve: Any) -> None:
    with serve("hotel") as client:
        response = client.get("/function/hotel?country=NL&day_of_week=9&season=summer&price=1")
    assert response.status_code == 422
    assert response.json() == {"error": "day_of_week: must be <= 7, got 9"}


# --- text that is not UTF-8 ---------------------------------------------------------------------


def test_a_query_value_that_is_not_utf8_is_a_400_naming_it(serve: Any) -> None:
    with serve("hotel") as client:
        escaped = client.get("/function/hotel?country=%FF&day_of_week=5&season=summer&price=1")
        ok = client.get("/function/hotel?country=%C3%A9&day_of_week=5&season=summer&price=1")
    assert escaped.status_code == 400
    assert escaped.json() == {"error": "country: not valid UTF-8 text"}
    assert ok.status_code == 200, ok.text


def test_raw_query_bytes_are_read_as_utf8_and_refused_when_they_are_not() -> None:
    assert codec.query_items("country=é".encode()) == [("country", "é")]
    with pytest.raises(BadRequest, match=r"^country: not valid UTF-8 text; season: not valid UTF-8 text$"):
        codec.query_items(b"country=\xe9&day_of_week=5&season=%FE")
    with pytest.raises(BadRequest, match=r"^co\\xffuntry: parameter name is not valid UTF-8 text$"):
        codec.query_items(b"co%FFuntry=NL")


def test_a_json_string_that_is_not_utf8_is_a_400_naming_the_input(serve: Any) -> None:
    batch = b'{"instances": [{"country": "NL"}, {"country": "N\xffL", "season": "summer"}]}'
    with serve("hotel") as client:
        named = client.post("/function/hotel", content=batch, headers={"content-type": "application/json"})
        outside = client.post("/function/hotel", content=b'{"country": "NL"}\xff', headers={})
    assert named.status_code == 400 and named.json() == {
        "error": "instances[1].country: not valid UTF-8 text"
    }
    assert outside.status_code == 400 and outside.json() == {"error": "request body is not valid UTF-8"}


# --- one wording for one violation ----------------------------------------------------------------


def ranged(
    count: Annotated[int, Field(ge=0, le=100)],
    price: Annotated[float, Field(ge=0)],
    small: Tensor[np.uint8, 2],
    half: Tensor[np.float16, 1],
    ids: Tensor[np.int64, 1],
) -> float:
    return 0.0


RANGED = Schema.from_function(ranged, has_model=False, where="ranged")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("count", 101, "must be <= 100, got 101"),
        ("count", -1.0, "must be >= 0, got -1"),
        ("count", 2.5, "expected an integer, got number 2.5"),
        ("count", 1e19, "10000000000000000000 does not fit in a 64-bit integer"),
        ("price", -3, "must be >= 0, got -3.0"),
        ("price", float("inf"), "expected a finite number, got inf"),
        ("small", [1, 300], "expected integers from 0 to 255 (uint8)"),
        ("small", [1, 0.5], "expected integers (uint8)"),
        ("small", [1, float("nan")], "expected finite numbers, got NaN or infinity"),
        ("half", [1e6], "a value is too large for float16"),
        ("ids", [2.0**63], "expected integers from -9223372036854775808 to 9223372036854775807 (int64)"),
    ],
)
def test_the_codec_and_columns_word_a_violation_alike(name: str, value: Any, message: str) -> None:
    field = RANGED.field(name)
    assert field is not None
    with pytest.raises(ValidationError) as by_value:
        codec.check_value(field, value, name)
    with pytest.raises(ValidationError) as by_column:
        columns.check(field, np.array([value]))
    assert by_value.value.message == f"{name}: {message}"
    assert by_column.value.message == f"{name}[0]: {message}"


def test_a_column_names_each_bad_row_once_in_row_order() -> None:
    field = RANGED.field("count")
    assert field is not None
    with pytest.raises(ValidationError) as info:
        columns.check(field, np.array([1.0, np.nan, 1e19, 200.0, -1.0, 2.5]))
    assert info.value.message == (
        "count[1]: expected an integer, got number nan; "
        "count[2]: 10000000000000000000 does not fit in a 64-bit integer; "
        "count[3]: must be <= 100, got 200; count[4]: must be >= 0, got -1; "
        "count[5]: expected an integer, got number 2.5"
    )
    assert info.value.count == 5

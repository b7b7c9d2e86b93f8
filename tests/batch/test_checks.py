"""What is checked before and while scoring: the input's columns, text cells, and bad rows set apart
from good ones by the runtime's own validation (its wording, without batch positions)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fnserve.batch import BatchError
from fnserve.batch.columns import check_columns, served_schema
from fnserve.batch.rows import ArrowRows, rows_of
from fnserve.batch.scoring import set_apart
from fnserve.batch.source import PartInfo, Piece
from fnserve.batch.text import type_cells
from fnserve.runtime.loader import discover
from tests.support.batching import FNS, rated

PART = PartInfo(0, "part-00000-000000", 0, None)


def test_columns_that_do_not_fit_are_all_named_before_any_work() -> None:
    schema = rated().schema
    found = {"price": pa.string(), "season": pa.string(), "booking": pa.int64(), "note": pa.string()}
    with pytest.raises(BatchError) as caught:
        check_columns(schema, found, keys=("id",), ignore=("note", "season"), what="in.parquet")
    message = caught.value.message
    assert message.startswith("in.parquet does not fit the function's inputs (price, day, season): ")
    assert "input day is missing (it is required)" in message
    assert "column price: expected an Arrow column of a number, got string" in message
    assert "column booking is not an input (carry it into the output with --key booking" in message
    assert "key column id is not in the input" in message
    assert "--ignore season: it is an input of the function" in message
    assert "note" not in message.split("; ")[-1] or "--ignore note" not in message


def test_columns_that_fit_pass_whatever_their_arrow_form() -> None:
    schema = rated().schema
    fine = {
        "price": pa.int32(),
        "day": pa.int64(),
        "season": pa.dictionary(pa.int32(), pa.string()),
        "id": pa.string(),
    }
    check_columns(schema, fine, keys=("id",), ignore=(), what="in")
    check_columns(schema, {"price": None, "day": None}, keys=(), ignore=(), what="in.csv")  # text: row by row
    with pytest.raises(BatchError, match="key column row has the name of the output's own column 'row'"):
        check_columns(schema, {**fine, "row": pa.int64()}, keys=("row",), ignore=(), what="in")


def test_a_served_functions_schema_is_read_back_from_its_description() -> None:
    for name in ("rated", "hotel", "kinds", "scale"):
        schema = discover([FNS / name])[0].schema
        assert served_schema(schema.describe()).describe() == schema.describe()


def test_csv_cells_are_typed_by_the_runtimes_text_rules() -> None:
    schema = rated().schema
    batch = pa.record_batch(
        {"price": ["1.5", "abc", "", " 7"], "day": ["1", "2", "x", "1.0"], "id": ["a", "b", "c", "d"]}
    )
    typed, bad = type_cells(schema.inputs, batch)
    assert typed.column("price").to_pylist() == [1.5, None, None, 7.0]
    assert bad == {
        1: "price: expected a number, got 'abc'",
        2: "day: expected an integer, got 'x'",
        3: "day: expected an integer, got '1.0'",
    }
    assert typed.column("id").to_pylist() == ["a", "b", "c", "d"]  # not an input: left as it is


def test_a_bad_csv_cell_is_a_bad_row_and_an_empty_one_a_missing_value() -> None:
    raw = pa.record_batch({"price": ["3", "", "4"], "day": ["1", "2", "8"], "id": ["a", "b", "c"]})
    rows, _ = rows_of(Piece(PART, 10, raw), "csv", rated().schema, ("id",))
    assert rows is not None and rows.ids.tolist() == [10, 11, 12]  # typed; validated when scored
    good, _, found = set_apart(rows, rated().schema)
    assert good is not None and good.ids.tolist() == [10]
    assert found[1].startswith("price: ") and "required" in found[1]
    assert found[2] == "day: must be <= 7, got 8"


def test_json_lines_are_validated_as_json_instances() -> None:
    lines = [
        b'{"price": 1, "day": 2, "id": 7}',
        b'{"price": "x", "day": 2}',
        b"[1]",
        b'{"price": 1, "day": 3, "extra": 1}',
    ]
    rows, bad = rows_of(Piece(PART, 0, lines), "jsonl", rated().schema, ("id",), frozenset({"id"}))
    assert bad is None and rows is not None
    good, _, found = set_apart(rows, rated().schema)
    assert good is not None and good.ids.tolist() == [0]
    assert good.key_columns()[0].to_pylist() == ["7"]  # keys from JSON lines are text
    assert found[1] == "price: expected a number, got string 'x'"
    assert found[2].startswith("expected a JSON object of inputs, got")
    assert found[3].startswith("extra: ")


@pytest.mark.parametrize("bad_every", [1, 2, 5, 13, 200])
def test_bad_rows_are_set_apart_exactly_and_the_good_ones_kept_in_order(bad_every: int) -> None:
    n = 200
    days = np.array([9 if i % bad_every == bad_every - 1 else 1 + i % 7 for i in range(n)])
    prices = np.where(
        np.arange(n) % 17 == 16, -1.0, np.arange(n, dtype=float)
    )  # a second kind, some rows both
    batch = pa.record_batch({"price": prices, "day": days})
    rows = ArrowRows(batch, np.arange(1000, 1000 + n), ("price", "day"), ())
    good, columns, found = set_apart(rows, rated().schema)
    expected_bad = {i for i in range(n) if days[i] == 9 or prices[i] < 0}
    assert set(found) == expected_bad
    assert good is None or good.ids.tolist() == [1000 + i for i in range(n) if i not in expected_bad]
    both = next((i for i in expected_bad if days[i] == 9 and prices[i] < 0), None)
    if both is not None:
        assert found[both] == "price: must be >= 0, got -1.0; day: must be <= 7, got 9"
    if good is not None:
        assert columns["price"].tolist() == [float(p) for p in good.batch.column("price").to_pylist()]


def test_a_problem_every_row_shares_makes_every_row_bad() -> None:
    batch = pa.record_batch({"price": [1.0, 2.0, 3.0], "day": [1, 2, 3], "other": [1, 2, 3]})
    good, _, found = set_apart(ArrowRows(batch, np.arange(3), ("price", "day", "other"), ()), rated().schema)
    assert good is None and set(found) == {0, 1, 2}
    assert found[0].startswith("other: ")

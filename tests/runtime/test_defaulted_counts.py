"""The defaulted counts the monitor reads: recorded where the codec fills a default, summed when
requests are stacked into a batch, and kept once when a large request is split."""

from __future__ import annotations

import numpy as np

from fnserve.runtime import codec
from fnserve.runtime.schema import Schema


def fn(price: float, nights: int = 1, note: str = "none") -> float:  # only its signature matters
    raise NotImplementedError


SCHEMA = Schema.from_function(fn, has_model=False, where="test")


def test_a_query_names_the_inputs_it_filled_with_their_defaults() -> None:
    filled: list[str] = []
    instance = codec.parse_query(SCHEMA, [("price", "3.5"), ("note", "hi")], defaulted=filled)
    assert instance == {"price": 3.5, "nights": 1, "note": "hi"} and filled == ["nights"]
    sent: list[str] = []
    codec.parse_query(SCHEMA, [("price", "1"), ("nights", "1"), ("note", "none")], defaulted=sent)
    assert sent == []  # a sent value equal to the default is sent


def test_stacked_requests_sum_their_counts_and_a_split_keeps_them_once() -> None:
    one = codec.Rows([{"price": 1.0, "nights": 1, "note": "none"}], {"nights": 1, "note": 1})
    two = codec.Rows([{"price": 2.0, "nights": 3, "note": "none"}], {"note": 1})
    columns = codec.Columns(
        {"price": np.ones(4), "nights": np.ones(4, np.int64), "note": np.array(["a"] * 4)}, {"nights": 4}
    )
    batch = codec.stack_parts(SCHEMA, [one, two, columns])
    assert len(batch["price"]) == 6 and batch.defaulted == {"nights": 5, "note": 2}
    parts = [codec.slice_columns(columns, start, start + 2) for start in (0, 2)]
    assert [getattr(p, "defaulted", None) for p in parts] == [{"nights": 4}, {}]

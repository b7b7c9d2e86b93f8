"""``defaulted_share``: the share of a window's instances whose input was not sent and was filled
with its ``@predict`` default (``watched``'s ``nights: int = 1``), on every way rows come in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from fnserve.runtime.http import ARROW_STREAM_TYPE
from fnserve.runtime.monitor import merge
from tests.support.monitoring import features, publish_watched, traffic


def omitting_nights(rows: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """Every ``every``-th row without its nights (a sent 1, the default's value, stays counted as sent)."""
    return [{k: v for k, v in r.items() if k != "nights" or i % every} for i, r in enumerate(rows)]


def shares(client: Any, version: int) -> dict[str, float]:
    return {
        name: f["defaulted_share"] for name, f in features(client.get("/monitor").json(), version).items()
    }


def test_defaulted_share_is_the_omitted_fraction_of_large_json_batches(serve: Any, tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path)
    rows = omitting_nights(traffic(400, seed=7), every=4)
    with serve("watched") as client:
        for start in range(0, 400, 100):  # over SMALL_BATCH: checked column by column
            assert client.post("/function/watched", json={"instances": rows[start : start + 100]}).is_success
        found = shares(client, version)
    assert found["nights"] == 0.25
    assert found["price"] == found["city"] == 0.0  # required inputs are never defaulted
    assert found["score"] == found["label"] == 0.0  # nor outputs


def test_defaulted_share_counts_gets_and_small_batches(serve: Any, tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path)
    rows = omitting_nights(traffic(100, seed=8), every=2)
    with serve("watched") as client:
        for row in rows[:60]:  # GET: one instance each, stacked in the model thread
            assert client.get("/function/watched", params=row).is_success
        for start in range(60, 100, 4):  # a few instances: checked one by one
            assert client.post("/function/watched", json={"instances": rows[start : start + 4]}).is_success
        assert shares(client, version)["nights"] == 0.5


def test_an_input_left_out_of_an_arrow_body_is_defaulted_on_every_row(serve: Any, tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path)
    rows = traffic(200, seed=9)
    table = pa.table({"price": [r["price"] for r in rows], "city": [r["city"] for r in rows]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with serve("watched") as client:
        answer = client.post(
            "/function/watched",
            content=sink.getvalue().to_pybytes(),
            headers={"content-type": ARROW_STREAM_TYPE},
        )
        assert answer.is_success, answer.text
        for row in rows[:200]:
            assert client.post("/function/watched", json={"instances": [row]}).is_success
        assert shares(client, version)["nights"] == 0.5


def test_replicas_shares_merge_weighted_by_their_samples(serve: Any, tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path)
    documents = []
    for every, n in ((2, 100), (1, 300)):  # half of 100 omitted, then all of 300
        with serve("watched") as client:
            rows = omitting_nights(traffic(n, seed=10), every=every)
            assert client.post("/function/watched", json={"instances": rows}).is_success
            documents.append(client.get("/monitor").json())
    merged = features(merge(documents), version)
    assert merged["nights"]["defaulted_share"] == (50 + 300) / 400

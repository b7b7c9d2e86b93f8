"""A GET whose query is a row of the version's table skips parsing's checks (the table's rows
passed them when it was read): its answer must be the one the checked path gives, byte for byte,
for every way of writing the query, and a query the checks refuse is refused as before.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from fnserve.optimize.precompute import Source, precompute
from fnserve.runtime.loader import discover
from fnserve.runtime.lookup import Shortcuts
from fnserve.runtime.metrics import LATENCY_BUCKETS_S, LoopCounter, LoopHistogram
from tests.support.tables import ARROW, metric, publish_weight, rows, store_of, tabled_project, write_rows

QUERIES = [
    "country=DE&day=2&member=true&size=large",  # a row of the table
    "size=large&member=true&day=2&country=DE",  # its inputs in another order
    "country=DE&day=2&member=true",  # size left to its default (small)
    "country=DE&day=02&member=TRUE&size=large",  # other text of the same values
    "country=DE&day=2&member=1&size=large",
    "country=%44E&day=2&member=yes&size=large",  # escaped
    "country=DE&day=2&member=true&size=large&",  # an empty parameter
    "country=NL&day=6&member=false",  # not in the table (days 1-3): the model answers
    "country=DE&day=2&member=true&size=large&extra=1",  # refused: an unknown parameter
    "country=DE&day=2&day=3&member=true",  # refused: given twice
    "country=DE&member=true",  # refused: day is required
    "country=DE&day=x&member=true",  # refused: not an int
    "country=DE&day=9&member=true",  # refused: above its bound
    "country=BE&day=2&member=true",  # refused: not a choice
    "country=DE&day=2&member=maybe",  # refused: not a bool
    "country=%FF&day=2&member=true",  # refused: not UTF-8
]


def table_project(tmp_path: Path, days: range = range(1, 4)) -> Path:
    folder = tabled_project(tmp_path)
    store = store_of(tmp_path)
    publish_weight(store, "2")
    (found,) = discover([folder])
    precompute(found, store, Source(write_rows(tmp_path / "rows.parquet", rows(days))))
    return folder


def answers(client: Any, target: str = "tabled") -> list[tuple[Any, ...]]:
    """Every query's status, body and cache headers, in JSON and Arrow, then again with its ETag."""
    seen = []
    for query in QUERIES:
        for accept in ("application/json", ARROW):
            response = client.get(f"/function/{target}?{query}", headers={"accept": accept})
            headers = {
                k: response.headers.get(k) for k in ("etag", "cache-control", "vary", "x-model-version")
            }
            seen.append((query, accept, False, response.status_code, response.content, headers))
            if response.status_code == 200:
                again = client.get(
                    f"/function/{target}?{query}",
                    headers={"accept": accept, "if-none-match": headers["etag"]},
                )
                headers = dict(again.headers) | {"x-request-id": ""}
                seen.append((query, accept, True, again.status_code, again.content, headers))
    return seen


def test_a_table_hit_is_answered_as_the_checked_path_answers_it(
    serve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = table_project(tmp_path)
    quick_hits: list[Any] = []
    query_hit = Shortcuts.query_hit

    def spy(self: Shortcuts, version: int | None, query: bytes) -> Any:
        quick_hits.append(query_hit(self, version, query))
        return quick_hits[-1]

    with monkeypatch.context() as spied:
        spied.setattr(Shortcuts, "query_hit", spy)
        with serve(str(folder)) as client:
            quick = answers(client) + answers(client, "tabled@2")
            text = client.get("/metrics").text
    hits = metric(text, "fnserve_table_hits_total", function="tabled")
    misses = 2 * 2  # the one query of a row not in the table, JSON and Arrow, unpinned and pinned
    assert metric(text, "fnserve_instances_total", function="tabled", version="2") == hits + misses
    with monkeypatch.context() as patched:
        patched.setattr(Shortcuts, "query_hit", lambda self, version, query: None)  # every GET checked
        with serve(str(folder)) as client:
            checked = answers(client) + answers(client, "tabled@2")
            assert metric(client.get("/metrics").text, "fnserve_table_hits_total", function="tabled") == hits
    assert [a[:4] for a in quick] == [a[:4] for a in checked]
    assert quick == checked
    statuses = {query: status for query, _, conditional, status, _, _ in quick if not conditional}
    assert [statuses[q] for q in QUERIES[:8]] == [200] * 8
    assert statuses[QUERIES[-1]] == 400 and {statuses[q] for q in QUERIES[8:-1]} == {422}
    assert hits == 2 * 2 * 7  # 7 queries of table rows, JSON and Arrow, unpinned and pinned; a 304 is no hit
    taken = [h for h in quick_hits if h is not None]
    assert len(taken) == 2 * hits  # the quick path took each of them, and each one's 304


def test_rows_a_tightened_check_refuses_are_refused_though_the_table_holds_them(
    serve: Any, tmp_path: Path
) -> None:
    folder = table_project(tmp_path)
    code = folder / "predict.py"
    code.write_text(code.read_text().replace("Field(ge=1, le=7)", "Field(ge=1, le=2)"))
    with serve(str(folder)) as client:
        refused = client.get("/function/tabled?country=DE&day=3&member=true")
        assert refused.status_code == 422 and refused.json()["error"] == "day: must be <= 2, got 3"
        assert client.get("/function/tabled?country=DE&day=2&member=true").status_code == 200
        text = client.get("/metrics").text
    assert metric(text, "fnserve_table_hits_total", function="tabled") == 1
    assert metric(text, "fnserve_batch_size_count", function="tabled") == 0  # the table answered


def test_a_captured_table_hit_holds_its_inputs_defaults_and_answer(serve: Any, tmp_path: Path) -> None:
    folder = table_project(tmp_path)
    (folder / "function.toml").write_text("[monitor]\ncapture_rate = 1\ncapture_flush_s = 0.05\n")
    with serve(str(folder)) as client:
        got = client.get("/function/tabled?country=DE&day=2&member=true")  # size: its default
        assert got.status_code == 200
        deadline = time.monotonic() + 10
        while metric(client.get("/metrics").text, "fnserve_capture_rows_total", function="tabled") < 1:
            assert time.monotonic() < deadline, "the hit was not captured"
            time.sleep(0.05)
        assert metric(client.get("/metrics").text, "fnserve_table_hits_total", function="tabled") == 1
    (row,) = (
        ds.dataset(tmp_path / "store" / "_capture", format="parquet", partitioning="hive")
        .to_table()
        .to_pylist()
    )
    (answered,) = got.json()["predictions"]
    assert (row["country"], row["day"], row["member"], row["size"]) == ("DE", 2, True, "small")
    assert (row["score"], row["bucket"]) == (pytest.approx(answered["score"]), answered["bucket"])
    assert row["_request_id"] == got.headers["x-request-id"] and row["version"] == 2


def test_loop_counters_expose_what_prometheus_clients_own_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counted = (
        LoopCounter("x_requests", "Requests", ["function"], ours),
        Counter("x_requests", "Requests", ["function"], registry=theirs),
    )
    timed = (
        LoopHistogram("x_seconds", "Latency", ["function"], LATENCY_BUCKETS_S, ours),
        Histogram("x_seconds", "Latency", ["function"], buckets=LATENCY_BUCKETS_S, registry=theirs),
    )
    for seconds in (0.0001, 0.0005, 0.0007, 0.3, 30, 31):  # on a bound, between, above them all
        for counter in counted:
            counter.labels("recs").inc(2)
        for histogram in timed:
            histogram.labels("recs").observe(seconds)

    def samples(registry: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
        found = [(s.name, sorted(s.labels.items()), s.value) for m in registry.collect() for s in m.samples]
        return sorted(s for s in found if not s[0].endswith("_created"))

    assert samples(ours) == samples(theirs)
    assert ours.get_sample_value("x_seconds_bucket", {"function": "recs", "le": "0.0005"}) == 2

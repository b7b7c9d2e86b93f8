"""A version's lookup table answers the rows it holds without the model, through every protocol,
exactly as the model would; misses go to the model (404 under ``strict``); a swap to a version
without a table stops table answers. Over a real `fn serve` and a real (file://) store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fnserve.optimize.precompute import Source, precompute
from fnserve.runtime.loader import discover
from fnserve.runtime.store import CheckpointStore
from tests.support.serving import Served, start_serve, stop
from tests.support.tables import (
    PROTOCOLS,
    answer,
    ask,
    metric,
    publish_weight,
    rows,
    store_of,
    tabled_project,
    write_rows,
)

HIT = {"country": "DE", "day": 2, "member": True, "size": "large"}  # days 1-3 are in the table
OTHER_HIT = {"country": "FR", "day": 1, "member": False, "size": "small"}
MISS = {"country": "NL", "day": 6, "member": False, "size": "large"}


def precompute_days(tmp_path: Path, folder: Path, store: CheckpointStore, days: range) -> int:
    url = write_rows(tmp_path / "rows.parquet", rows(days))
    (found,) = discover([folder])
    return precompute(found, store, Source(url)).version


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Served, httpx.Client, CheckpointStore, Path]]:
    folder = tabled_project(tmp_path)
    store = store_of(tmp_path)
    publish_weight(store, "2")
    env = {"FNSERVE_RELOAD_INTERVAL_S": "0.2", "FNSERVE_CACHE": str(tmp_path / "cache")}
    served = start_serve(tmp_path, folder, extra_env=env)
    try:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            yield served, client, store, folder
    finally:
        stop(served)


def wait_for_version(client: httpx.Client, version: int) -> None:
    deadline = time.monotonic() + 15
    while client.get("/functions").json()["functions"][0]["version"] != version:
        assert time.monotonic() < deadline, f"version {version} was not loaded"
        time.sleep(0.05)


def counts(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        "model calls": metric(text, "fnserve_batch_size_count", function="tabled"),
        "hits": metric(text, "fnserve_table_hits_total", function="tabled"),
        "misses": metric(text, "fnserve_table_misses_total", function="tabled"),
    }


def test_every_protocol_answers_a_hit_as_the_model_does(server: Any, tmp_path: Path) -> None:
    _, client, store, folder = server
    batch = [HIT, OTHER_HIT]
    by_model = {p: answer(p, ask(client, p, batch)) for p in PROTOCOLS}  # version 1: no table
    table_version = precompute_days(tmp_path, folder, store, range(1, 4))
    wait_for_version(client, table_version)
    before = counts(client)
    for protocol in PROTOCOLS:
        response = ask(client, protocol, batch)
        assert response.headers["x-model-version"] == str(table_version), protocol
        assert answer(protocol, response) == by_model[protocol], protocol
    after = counts(client)
    assert after["model calls"] == before["model calls"]  # no model call for any of them
    assert after["hits"] - before["hits"] == 2 * len(PROTOCOLS) - 2  # GET and JSON: one instance
    assert after["misses"] == before["misses"]
    text = client.get("/metrics").text
    assert metric(text, "fnserve_table_hits_total", function="tabled", version=str(table_version)) > 0


def test_a_batch_of_hits_and_misses_is_answered_in_order_by_one_version(server: Any, tmp_path: Path) -> None:
    _, client, store, folder = server
    batch = [HIT, MISS, OTHER_HIT, MISS | {"country": "FR"}]
    by_model = {p: answer(p, ask(client, p, batch)) for p in PROTOCOLS if p not in ("GET", "JSON")}
    table_version = precompute_days(tmp_path, folder, store, range(1, 4))
    wait_for_version(client, table_version)
    before = counts(client)
    for protocol in by_model:
        response = ask(client, protocol, batch)
        assert response.headers["x-model-version"] == str(table_version), protocol
        assert answer(protocol, response) == by_model[protocol], protocol
    after = counts(client)
    assert after["hits"] - before["hits"] == 2 * len(by_model)
    assert after["misses"] - before["misses"] == 2 * len(by_model)
    assert after["model calls"] > before["model calls"]  # the misses went to the model


def test_a_version_without_a_table_stops_table_answers(server: Any, tmp_path: Path) -> None:
    _, client, store, folder = server
    table_version = precompute_days(tmp_path, folder, store, range(1, 8))
    wait_for_version(client, table_version)
    from_table = ask(client, "GET", [HIT]).json()
    newer = publish_weight(store, "5")  # a new model, no table
    wait_for_version(client, newer)
    before = counts(client)
    from_model = ask(client, "GET", [HIT])
    assert from_model.headers["x-model-version"] == str(newer)
    assert from_model.json() != from_table  # weight 5, not the table's weight-2 answer
    assert from_model.json()["predictions"][0]["score"] == pytest.approx((5 * 2 + 3 + 0.5) / 3, rel=1e-6)
    after = counts(client)
    assert after["hits"] == before["hits"] and after["model calls"] == before["model calls"] + 1

"""The result cache: ``[cache] max_bytes`` keeps the model's answers by (version, inputs); a
repeated row is answered without the model, never by another version's answer, and the cache
stays within its bytes, counted honestly."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fnserve.runtime.cache import ResultCache
from fnserve.runtime.errors import ConfigError
from fnserve.runtime.loader import discover
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings
from tests.support.tables import answer, ask, metric, publish_weight, store_of, tabled_project

A = {"country": "DE", "day": 2, "member": True, "size": "large"}
B = {"country": "NL", "day": 6, "member": False, "size": "small"}


def model_calls(client: Any) -> float:
    return metric(client.get("/metrics").text, "fnserve_batch_size_count", function="tabled")


def test_a_repeated_row_is_answered_from_the_cache_in_every_protocol(serve: Any, tmp_path: Path) -> None:
    folder = tabled_project(tmp_path, "[cache]\nmax_bytes = 100_000\n")
    publish_weight(store_of(tmp_path), "2")
    with serve(str(folder)) as client:
        for protocol in ("GET", "JSON instances", "Arrow", "v2", "TF rows", "TF columns"):
            first = answer(protocol, ask(client, protocol, [A, B]))
            calls = model_calls(client)
            again = ask(client, protocol, [A, B])
            assert answer(protocol, again) == first, protocol
            assert again.headers["x-model-version"] == "1"
            assert model_calls(client) == calls, protocol  # both rows from the cache
        mixed = answer("JSON instances", ask(client, "JSON instances", [B, A | {"day": 7}, A]))
        text = client.get("/metrics").text
    by_model = [(2 * 7 + 3 + 0.5) / 3, (2 * 2 + 3 + 0.5) / 3]  # weight 2
    assert [p["score"] for p in mixed["predictions"]][1:] == pytest.approx(by_model, rel=1e-6)
    assert metric(text, "fnserve_cache_hits_total", function="tabled", version="1") > 0
    assert metric(text, "fnserve_cache_misses_total", function="tabled", version="1") > 0
    assert 0 < metric(text, "fnserve_cache_bytes", function="tabled") <= 100_000


def test_the_cache_never_answers_for_another_version(serve: Any, tmp_path: Path) -> None:
    folder = tabled_project(tmp_path, "[cache]\nmax_bytes = 100_000\n")
    store = store_of(tmp_path)
    publish_weight(store, "2")
    with serve(str(folder)) as client:
        first = ask(client, "GET", [A]).json()
        assert ask(client, "GET", [A]).json() == first  # cached
        publish_weight(store, "5")
        deadline = time.monotonic() + 10
        while client.get("/functions").json()["functions"][0]["version"] != 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        calls = model_calls(client)
        newer = ask(client, "GET", [A])
        assert newer.headers["x-model-version"] == "2"
        assert newer.json()["predictions"][0]["score"] == pytest.approx((5 * 2 + 3 + 0.5) / 3, rel=1e-6)
        assert model_calls(client) == calls + 1  # computed by the new model, not version 1's answer
        assert ask(client, "GET", [A]).json() == newer.json()  # and cached under version 2
        assert model_calls(client) == calls + 1


def row(i: int) -> tuple[tuple[Any, ...], Outputs]:
    return ("NL", i, i * 0.5), Outputs(1, np.array([i], dtype=np.float32), None, 1)


def test_the_cache_stays_within_its_bytes_evicting_the_least_recently_used() -> None:
    cache = ResultCache(max_bytes=20_000)
    for i in range(1000):
        cache.put(1, *row(i))
        if i % 5 == 0:
            assert cache.get(1, row(0)[0]) is not None  # used again and again: kept
        assert cache.bytes <= 20_000
    assert 20 < len(cache) < 1000
    assert cache.get(1, row(0)[0]) is not None
    assert cache.get(1, row(1)[0]) is None  # evicted first
    assert cache.get(1, row(999)[0]) is not None


def test_the_bytes_counted_are_the_bytes_held() -> None:
    cache = ResultCache(max_bytes=10_000_000)
    batch = Outputs(256, np.arange(256, dtype=np.float64), None, 1)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(2000):
        key = (f"country-{i}", i, float(i))
        cache.put(1, key, batch.slice(i % 256, i % 256 + 1))  # views: the cache copies its row
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert 0.7 * held <= cache.bytes <= 1.5 * held, (cache.bytes, held)


def test_a_row_larger_than_the_cache_is_not_kept() -> None:
    cache = ResultCache(max_bytes=500)
    cache.put(1, ("x",), Outputs(1, np.zeros((1, 1000)), None, 1))
    assert len(cache) == 0 and cache.bytes == 0


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[cache]\nmax_bytes = -1\n", "max_bytes must be a whole number"),
        ("[cache]\nmax_bytes = '10MB'\n", "max_bytes must be a whole number"),
        ("[cache]\nmax_bytes = true\n", "max_bytes must be a whole number"),
        ("[cache]\nmax_byte = 10\n", "unknown key 'max_byte'"),
    ],
)
def test_a_bad_cache_setting_stops_the_start_naming_it(tmp_path: Path, toml: str, named: str) -> None:
    folder = tabled_project(tmp_path, toml)
    settings = Settings.from_mapping(tmp_path, {}, {}, {"store": f"file://{tmp_path}/store"})
    with pytest.raises(ConfigError, match=named) as raised:
        Runtime(discover([folder]), settings)
    assert "function.toml: [cache]" in raised.value.message

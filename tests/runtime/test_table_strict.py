"""``[table] strict = true``: only the rows a version's table holds are answered; a miss is a
404 naming its inputs (and which instance of a batch), and the model is never called. A table
setting that is not a boolean stops the start, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fnserve.optimize.precompute import Source, precompute
from fnserve.runtime.errors import ConfigError
from fnserve.runtime.loader import discover
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings
from tests.support.tables import ask, metric, publish_weight, rows, store_of, tabled_project, write_rows

HIT = {"country": "DE", "day": 2, "member": True, "size": "large"}
MISS = {"country": "NL", "day": 6, "member": False, "size": "large"}


def strict_table(tmp_path: Path) -> Path:
    folder = tabled_project(tmp_path, "[table]\nstrict = true\n")
    store = store_of(tmp_path)
    publish_weight(store, "2")
    (found,) = discover([folder])
    precompute(found, store, Source(write_rows(tmp_path / "rows.parquet", rows(range(1, 4)))))
    return folder


def test_a_strict_table_answers_its_rows_and_refuses_others_naming_them(serve: Any, tmp_path: Path) -> None:
    folder = strict_table(tmp_path)
    with serve(str(folder)) as client:
        assert ask(client, "GET", [HIT]).status_code == 200
        missed = ask(client, "GET", [MISS])
        assert missed.status_code == 404
        assert missed.json()["error"].startswith(
            "no precomputed answer for country='NL', day=6, member=False, size='large'"
        )
        assert "strict" in missed.json()["error"]
        for protocol in ("JSON instances", "Arrow", "v2", "TF rows", "TF columns"):
            response = ask(client, protocol, [HIT, MISS, HIT])
            assert response.status_code == 404, protocol
            assert "instance 1 (country='NL', day=6" in response.json()["error"], protocol
        text = client.get("/metrics").text
    assert metric(text, "fnserve_batch_size_count", function="tabled") == 0  # the model never ran
    assert metric(text, "fnserve_table_misses_total", function="tabled", version="2") == 6
    assert metric(text, "fnserve_table_hits_total", function="tabled", version="2") == 11


def test_a_strict_function_whose_version_has_no_table_is_answered_by_the_model(
    serve: Any, tmp_path: Path
) -> None:
    folder = tabled_project(tmp_path, "[table]\nstrict = true\n")
    publish_weight(store_of(tmp_path), "2")
    with serve(str(folder)) as client:
        assert ask(client, "GET", [MISS]).status_code == 200


@pytest.mark.parametrize(
    ("toml", "named"),
    [("[table]\nstrict = 'yes'\n", "strict must be true or false"), ("[table]\nstric = true\n", "'stric'")],
)
def test_a_bad_table_setting_stops_the_start_naming_it(tmp_path: Path, toml: str, named: str) -> None:
    folder = tabled_project(tmp_path, toml)
    settings = Settings.from_mapping(tmp_path, {}, {}, {"store": f"file://{tmp_path}/store"})
    with pytest.raises(ConfigError, match=named) as raised:
        Runtime(discover([folder]), settings)
    assert "function.toml: [table]" in raised.value.message

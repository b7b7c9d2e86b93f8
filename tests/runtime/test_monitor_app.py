"""``GET /monitor`` and ``/metrics`` in process: a version with its training reference is profiled
live; one without, or with a reference of other inputs, is served and says why it has no drift."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.monitoring import WATCHED, features, publish_watched, traffic


def send(client: Any, rows: list[dict[str, Any]], per_request: int = 50) -> None:
    for start in range(0, len(rows), per_request):
        answer = client.post("/function/watched", json={"instances": rows[start : start + per_request]})
        assert answer.status_code == 200, answer.text


def test_traffic_like_the_reference_stays_below_the_thresholds(serve: Any, tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path)
    with serve("watched") as client:
        send(client, traffic(1000, seed=5))
        doc = client.get("/monitor").json()
        entry = doc["functions"]["watched"]["versions"][str(version)]
        assert entry["reference"] is True and entry["note"] is None
        assert entry["window"] == {"seconds": 300.0, "count": 10000, "samples": 1000, "min_samples": 100}
        found = features(doc, version)
        assert set(found) == {"price", "city", "nights", "score", "label"}
        for name, f in found.items():
            assert f["psi"] < f["psi_threshold"] and f["js"] < f["js_threshold"], (name, f)
            assert not f["drifted"]
            assert sum(f["counts"]) == 1000 and len(f["counts"]) == len(f["bins"]) == len(f["reference"])
        assert found["city"]["bins"] == ["amsterdam", "berlin", "paris", "other"]
        assert found["label"]["role"] == "output" and found["price"]["type"] == "numeric"
        assert client.get("/monitor/watched").json() == client.get("/monitor").json()
        assert client.get("/monitor/nope").status_code == 404


def test_doubled_prices_cross_the_threshold_for_price_and_the_outputs(serve: Any, tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path)
    with serve("watched") as client:
        send(client, traffic(1000, seed=6, price_factor=2.0))
        found = features(client.get("/monitor").json(), version)
        drifted = {name for name, f in found.items() if f["drifted"]}
        assert drifted == {"price", "score", "label"}  # the model's answers moved with the prices
        assert found["price"]["psi"] > 1.0 and found["price"]["unknown_share"] > 0
        metrics = client.get("/metrics").text
        line = f'fnserve_drift_score{{feature="price",function="watched",kind="psi",version="{version}"}}'
        assert line in metrics
        assert f'fnserve_monitor_window_samples{{function="watched",version="{version}"}} 1000.0' in metrics
        assert f'fnserve_monitor_window_seconds{{function="watched",version="{version}"}} 300.0' in metrics
        assert f'fnserve_monitor_window_limit{{function="watched",version="{version}"}} 10000.0' in metrics
        labels = f'feature="price",function="watched",kind="psi",version="{version}"'
        assert f"fnserve_drift_threshold{{{labels}}} 0.2" in metrics


def test_a_version_without_reference_is_served_and_says_so(serve: Any, tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path, reference="none")
    with serve("watched") as client:
        send(client, traffic(20, seed=1))
        entry = client.get("/monitor").json()["functions"]["watched"]["versions"][str(version)]
        assert entry == {
            "reference": False,
            "note": "no reference",
            "window": {"seconds": 300.0, "count": 10000, "samples": 20, "min_samples": 100},
            "features": [],
        }


def test_a_reference_of_other_inputs_is_reported_and_ignored(
    serve: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path, reference="mismatched")
    with caplog.at_level(logging.WARNING, logger="fnserve.monitor"), serve("watched") as client:
        send(client, traffic(20, seed=1))
        entry = client.get("/monitor").json()["functions"]["watched"]["versions"][str(version)]
    assert entry["reference"] is False and entry["features"] == []
    assert "input 'price' is not in it" in entry["note"]
    assert "'distance_km', which the function does not take" in entry["note"]
    assert "does not match the function's inputs" in caplog.text


def test_a_malformed_reference_is_reported_and_the_version_served(serve: Any, tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path, reference="malformed")
    with serve("watched") as client:
        send(client, traffic(20, seed=1))
        entry = client.get("/monitor").json()["functions"]["watched"]["versions"][str(version)]
    assert entry["reference"] is False and entry["features"] == []
    assert entry["note"].startswith("fnserve-reference.json is malformed")


def test_monitoring_off_leaves_the_function_out(serve: Any, tmp_path: Path) -> None:
    folder = tmp_path / "fn" / "watched"
    shutil.copytree(WATCHED, folder)
    (folder / "function.toml").write_text("[monitor]\nenabled = false\ncapture_rate = 0.5\n")
    publish_watched(f"file://{tmp_path}/store", tmp_path)
    with serve(str(folder)) as client:
        send(client, traffic(20, seed=1))
        assert client.get("/monitor").json()["functions"]["watched"]["versions"] == {}

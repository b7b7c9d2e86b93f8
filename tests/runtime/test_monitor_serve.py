"""Drift through a real ``fn serve``: traffic like the training data scores below every threshold;
then, with prices doubled, the window (by count, 1,000 instances) holds only the shifted traffic and
the price and the answers that follow it cross their thresholds while the city and nights stay below."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from tests.support.monitoring import WATCHED, features, publish_watched, traffic
from tests.support.serving import start_serve, stop


def send(client: httpx.Client, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 100):
        answer = client.post("/function/watched", json={"instances": rows[start : start + 100]})
        assert answer.status_code == 200, answer.text


def test_a_shifted_input_crosses_its_threshold_and_the_others_stay_below(tmp_path: Path) -> None:
    folder = tmp_path / "functions" / "watched"
    shutil.copytree(WATCHED, folder)
    (folder / "function.toml").write_text("[monitor]\nwindow_count = 1000\npsi_threshold = 0.2\n")
    version = publish_watched(f"file://{tmp_path}/store", tmp_path)
    served = start_serve(tmp_path, folder)
    try:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            send(client, traffic(1000, seed=21))
            calm = features(client.get("/monitor/watched").json(), version)
            assert not any(f["drifted"] for f in calm.values()), calm
            assert all(f["psi"] < 0.1 for f in calm.values())

            send(client, traffic(2000, seed=22, price_factor=2.0))
            doc = client.get("/monitor").json()
            window = doc["functions"]["watched"]["versions"][str(version)]["window"]
            assert 1000 <= window["samples"] <= 1200  # the last 1,000, to a bucket's precision
            shifted = features(doc, version)
            assert {n for n, f in shifted.items() if f["drifted"]} == {"price", "score", "label"}
            assert shifted["price"]["psi"] > shifted["price"]["psi_threshold"]
            for name in ("city", "nights"):
                assert shifted[name]["psi"] < 0.1 and shifted[name]["js"] < 0.1, shifted[name]
            metrics = client.get("/metrics").text
            assert 'fnserve_drift_score{feature="price",function="watched",kind="js"' in metrics
    finally:
        stop(served)

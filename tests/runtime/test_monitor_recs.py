"""recs, trained for real, watched: traffic like its training data stays below every threshold;
with prices doubled, ``hotel_price`` crosses its threshold and the other inputs stay below."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.monitoring import load_module

ROOT = Path(__file__).resolve().parents[2]
RECS = ROOT / "functions" / "recs"
INPUTS = ("user_country", "user_language", "day_of_week", "season", "hotel_price", "hotel_id")


def bookings(rows: int, price_factor: float = 1.0) -> list[dict[str, Any]]:
    module = load_module(RECS / "train.py", "recs_train_for_tests")
    data = module.generate_bookings(rows, seed=7)  # seed 7: the hotels and countries recs learnt
    columns = {name: data[name].tolist() for name in INPUTS}
    columns["hotel_price"] = [round(p * price_factor, 2) for p in columns["hotel_price"]]
    return [dict(zip(INPUTS, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def send(client: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 200):
        answer = client.post("/function/recs", json={"instances": rows[start : start + 200]})
        assert answer.status_code == 200, answer.text


@pytest.mark.slow
def test_recs_doubled_prices_drift_and_nothing_else(serve: Any, tmp_path: Path) -> None:
    env = {**os.environ, "FNSERVE_STORE": f"file://{tmp_path}/store", "FNSERVE_PROJECT": str(tmp_path)}
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run(
        [sys.executable, str(RECS / "train.py"), "--rows", "20000"], env=env, check=True, capture_output=True
    )
    folder = tmp_path / "recs"
    folder.mkdir()
    (folder / "predict.py").write_text((RECS / "predict.py").read_text())
    (folder / "function.toml").write_text("[monitor]\nwindow_count = 2000\n")
    with serve(str(folder)) as client:
        send(client, bookings(2000))
        calm = _features_of(client.get("/monitor/recs").json())
        assert set(calm) == {*INPUTS, "output"}
        assert not any(f["drifted"] for f in calm.values()), {n: (f["psi"], f["js"]) for n, f in calm.items()}

        send(client, bookings(4000, price_factor=2.0))
        shifted = _features_of(client.get("/monitor/recs").json())
        drifted = {n for n, f in shifted.items() if f["drifted"] and n != "output"}
        assert drifted == {"hotel_price"}, {n: (f["psi"], f["js"]) for n, f in shifted.items()}
        assert shifted["output"]["psi"] > calm["output"]["psi"]  # the answers moved with the prices


def _features_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (version,) = doc["functions"]["recs"]["versions"]
    entry = doc["functions"]["recs"]["versions"][version]
    assert entry["reference"] is True, entry["note"]
    return {f["name"]: f for f in entry["features"]}

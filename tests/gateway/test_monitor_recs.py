"""recs, trained for real, behind the gateway on two replicas: with prices doubled the merged
``hotel_price`` score crosses its threshold and the other inputs' merged scores stay below."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtime.test_monitor_recs import INPUTS, RECS, ROOT, bookings
from tests.support.gateways import deployment, running_gateway


def send(client: httpx.Client, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 100):
        answer = client.post("/function/recs", json={"instances": rows[start : start + 100]})
        assert answer.status_code == 200, answer.text


def merged_features(client: httpx.Client) -> tuple[int, dict[str, dict[str, Any]]]:
    doc = client.get("/monitor/recs").json()
    (entry,) = doc["functions"]["recs"]["versions"].values()
    assert entry["reference"] is True, entry["note"]
    return entry["window"]["samples"], {f["name"]: f for f in entry["features"]}


@pytest.mark.slow
def test_doubled_prices_drift_on_the_merged_price_alone(tmp_path: Path) -> None:
    env = {**os.environ, "FNSERVE_STORE": f"file://{tmp_path}/store", "FNSERVE_PROJECT": str(tmp_path)}
    env["PYTHONPATH"] = str(ROOT)
    trained = subprocess.run(
        [sys.executable, str(RECS / "train.py"), "--rows", "20000"], env=env, capture_output=True, text=True
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    folder = tmp_path / "recs"
    folder.mkdir()
    (folder / "predict.py").write_text((RECS / "predict.py").read_text())
    (folder / "function.toml").write_text("[monitor]\nwindow_count = 1000\n")  # per replica
    recs = deployment("recs", ("1", str(folder), 100, "latest"), min_replicas=2, max_replicas=2)
    with running_gateway(tmp_path, [recs]) as gw:
        gw.wait_ready("recs", "1", 2, timeout_s=120)
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            send(client, bookings(2000))
            samples, calm = merged_features(client)
            assert samples > 1000  # both replicas' windows, summed
            assert not any(f["drifted"] for f in calm.values()), {
                n: (f["psi"], f["js"]) for n, f in calm.items()
            }

            send(client, bookings(4000, price_factor=2.0))  # each replica's window: doubled prices only
            samples, shifted = merged_features(client)
        endpoints = gw.gateway.functions["recs"].versions["1"].balancer.endpoints
        each = [httpx.get(f"{e.url}/monitor/recs").json() for e in endpoints]
    assert len(each) == 2 and samples == sum(
        next(iter(r["functions"]["recs"]["versions"].values()))["window"]["samples"] for r in each
    )
    price = shifted["hotel_price"]
    assert price["drifted"] and price["psi"] > price["psi_threshold"], price
    for name in INPUTS:
        if name != "hotel_price":
            f = shifted[name]
            assert f["psi"] < f["psi_threshold"] and f["js"] < f["js_threshold"], (name, f["psi"], f["js"])

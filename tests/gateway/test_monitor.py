"""``GET /monitor`` through the gateway with two replicas: their live counts are summed, then scored,
so the function's drift is that of all its traffic, not an average of the replicas' scores."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.gateways import deployment, running_gateway
from tests.support.monitoring import features, publish_watched, traffic


def test_two_replicas_histograms_are_merged(tmp_path: Path) -> None:
    version = publish_watched(f"file://{tmp_path}/store", tmp_path)
    watched = deployment("watched", ("1", "watched", 100, "latest"), min_replicas=2, max_replicas=2)
    with running_gateway(tmp_path, [watched]) as gw:
        gw.wait_ready("watched", "1", 2)
        rows = traffic(1200, seed=31, price_factor=2.0)
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            for start in range(0, len(rows), 50):
                answer = client.post("/function/watched", json={"instances": rows[start : start + 50]})
                assert answer.status_code == 200, answer.text
            merged = client.get("/monitor/watched").json()
            assert client.get("/monitor").json() == merged
            assert client.get("/monitor/nope").status_code == 404
        endpoints = gw.gateway.functions["watched"].versions["1"].balancer.endpoints
        replicas = [httpx.get(f"{e.url}/monitor/watched").json() for e in endpoints]
    each = [r["functions"]["watched"]["versions"][str(version)]["window"]["samples"] for r in replicas]
    assert len(each) == 2 and all(0 < n < 1200 for n in each)  # both replicas took part
    entry = merged["functions"]["watched"]["versions"][str(version)]
    assert entry["window"]["samples"] == 1200
    found = features(merged, version)
    by_replica = [features(r, version)["price"]["counts"] for r in replicas]
    assert found["price"]["counts"] == [a + b for a, b in zip(*by_replica, strict=True)]
    assert found["price"]["drifted"] and not found["city"]["drifted"] and not found["nights"]["drifted"]

"""The gateway's dashboard: its figures per function and version, and what the token guards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
from click.testing import CliRunner

from fnserve.cli.main import cli
from tests.support.gateways import FAST, TOKEN, deployment, running_gateway

IDLE = deployment("double", ("1", "double", 100, "latest"), min_replicas=0)


def test_the_dashboard_shows_versions_weights_replicas_and_traffic(tmp_path: Path) -> None:
    split = deployment("double", ("1", "double", 100, "latest"), ("2", "double", 0, "latest"), min_replicas=1)
    with running_gateway(tmp_path, [split]) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        gw.wait_ready("double", "1", 1)
        for x in range(5):
            assert client.get(f"/function/double?x={x}").status_code == 200
        assert client.post("/function/double", json={"instances": [{"x": 1}] * 7}).status_code == 200
        assert client.get("/function/double?x=oops").status_code == 422
        page = client.get("/dashboard")
        data = client.get("/dashboard/data").json()
    assert page.status_code == 200 and "/dashboard/app.js" in page.text
    assert data["source"] == "gateway (local)"
    (double,) = data["functions"]
    versions = {v["version"]: v for v in double["versions"]}
    assert set(versions) == {"1", "2"}
    one, two = versions["1"], versions["2"]
    assert (one["weight"], one["ready"], one["desired"], one["serving"]) == (100, 1, 1, True)
    assert (two["weight"], two["serving"]) == (0, False)
    assert one["last_minute"]["requests"] == 7 and one["last_minute"]["rejected"] == 1
    assert one["last_minute"]["p99_ms"] > 0 and two["last_minute"]["requests"] == 0
    # Batch sizes are the replica's: 5 batches of 1 and one of 7 (the 422 never reached the model).
    minute = one["last_minute"]
    assert (minute["batches"], minute["mean_batch"], minute["max_batch"]) == (6, 2.0, 7)
    assert sum(p["batches"] for p in one["points"]) == 6 and two["last_minute"]["batches"] == 0
    # Only what GET /functions shows openly: no replica addresses, images or scaling.
    text = str(data)
    assert "127.0.0.1" not in text and "image" not in text and "scaling" not in text


def test_with_protected_predictions_the_data_needs_the_token_and_the_page_does_not(
    tmp_path: Path,
) -> None:
    options = dataclasses.replace(FAST, protect_predictions=True)
    with running_gateway(tmp_path, [IDLE], options) as gw, httpx.Client(base_url=gw.url) as client:
        page = client.get("/dashboard")
        missing = client.get("/dashboard/data")
        wrong = client.get("/dashboard/data", headers={"Authorization": "Bearer nope"})
        right = client.get("/dashboard/data", headers={"Authorization": f"Bearer {TOKEN}"})
        monitor = [client.get(path) for path in ("/monitor", "/monitor/double")]
        monitor_right = client.get("/monitor", headers={"Authorization": f"Bearer {TOKEN}"})
        refused = CliRunner().invoke(cli, ["monitor", "double", "--url", gw.url])
        allowed = CliRunner().invoke(cli, ["monitor", "double", "--url", gw.url, "--token", TOKEN])
    assert refused.exit_code == 1 and "monitoring data needs" in refused.output, refused.output
    assert allowed.exit_code == 0 and TOKEN not in allowed.output, allowed.output
    assert [m.status_code for m in monitor] == [401, 401] and monitor_right.status_code == 200
    assert "monitoring data needs 'Authorization: Bearer <token>'" in monitor[0].json()["error"]
    assert page.status_code == 200 and TOKEN not in page.text
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"] and wrong.status_code == 401
    assert right.status_code == 200 and right.json()["functions"][0]["name"] == "double"


def test_with_open_predictions_the_data_is_open_too(tmp_path: Path) -> None:
    with running_gateway(tmp_path, [IDLE]) as gw:
        answer = httpx.get(f"{gw.url}/dashboard/data")
    assert answer.status_code == 200
    assert answer.json()["functions"][0]["versions"][0]["desired"] == 0

"""The gateway's admin API and its answers to bad input: clear 4xx JSON, never a 500.

Most of these need no replica (functions deployed with min_replicas 0 are not started until asked).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.gateways import FAST, FNS, TOKEN, deployment, running_gateway

IDLE = deployment("double", ("1", "double", 100, "latest"), min_replicas=0)


def test_the_admin_api_needs_the_token(tmp_path: Path) -> None:
    with running_gateway(tmp_path, [IDLE]) as gw:
        missing = httpx.get(f"{gw.url}/admin/status")
        wrong = httpx.post(
            f"{gw.url}/admin/functions/double/rollback", headers={"Authorization": "Bearer nope"}
        )
        right = gw.admin("GET", "/status")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    assert wrong.status_code == 401
    assert right.status_code == 200 and right.json()["target"] == "local"
    assert right.json()["functions"][0]["versions"][0]["desired"] == 0


def test_admin_changes_and_their_errors(tmp_path: Path) -> None:
    image = str(FNS / "double")
    with running_gateway(tmp_path, []) as gw:
        created = gw.admin("PUT", "/functions/double", {"image": image, "scaling": {"min_replicas": 0}})
        added = gw.admin("PUT", "/functions/double", {"version": "2", "image": image, "weight": 10})
        answers = {
            "bad json": httpx.put(
                f"{gw.url}/admin/functions/double", content=b"{", headers={"Authorization": f"Bearer {TOKEN}"}
            ),
            "unknown field": gw.admin("PUT", "/functions/double", {"colour": "red"}),
            "wrong type": gw.admin("PUT", "/functions/double", {"version": "3", "image": 5}),
            "missing folder": gw.admin("PUT", "/functions/other", {"image": str(tmp_path / "nowhere")}),
            "bad name": gw.admin("PUT", "/functions/b%20d", {"image": image}),
            "bad scale": gw.admin("POST", "/functions/double/scale", {"min_replicas": 5, "max_replicas": 2}),
            "unknown scale": gw.admin("POST", "/functions/double/scale", {"replicas": 5}),
            "bad split": gw.admin("POST", "/functions/double/split", {"weights": {"1": 50}}),
            "no weights": gw.admin("POST", "/functions/double/split", {"1": 50}),
            "unknown version": gw.admin("POST", "/functions/double/promote", {"version": "7"}),
            "unknown function": gw.admin("POST", "/functions/nope/rollback"),
            "bad tail": gw.admin("GET", "/functions/double/logs?tail=lots"),
        }
        rolled = gw.admin("POST", "/functions/double/rollback")
        deleted = gw.admin("DELETE", "/functions/double")
        after = gw.admin("GET", "/functions/double")
    assert created.status_code == 200 and [v["weight"] for v in created.json()["versions"]] == [100]
    assert [v["weight"] for v in added.json()["versions"]] == [90, 10]
    statuses = {what: r.status_code for what, r in answers.items()}
    assert statuses == {
        "bad json": 400, "unknown field": 422, "wrong type": 422, "missing folder": 422, "bad name": 422,
        "bad scale": 422, "unknown scale": 422, "bad split": 422, "no weights": 422, "unknown version": 422,
        "unknown function": 404, "bad tail": 422,
    }  # fmt: skip
    assert all(set(r.json()) == {"error"} for r in answers.values())
    assert "add up to 100" in answers["bad split"].json()["error"]
    assert "no version '7'" in answers["unknown version"].json()["error"]
    assert [v["weight"] for v in rolled.json()["versions"]] == [100, 0]
    assert deleted.json() == {"deleted": "double"} and after.status_code == 404


def test_prediction_routes_answer_bad_requests_with_json(tmp_path: Path) -> None:
    options = dataclasses.replace(FAST, max_body_bytes=100)
    with running_gateway(tmp_path, [IDLE], options) as gw, httpx.Client(base_url=gw.url) as client:
        answers = {
            "unknown function": client.get("/function/nope?x=1"),
            "unknown version": client.get("/function/double@9?x=1"),
            "too large": client.post("/function/double", content=b"x" * 101),
            "no route": client.get("/function/"),
            "v2 unknown": client.post("/v2/models/nope/infer", json={}),
            "wrong method": client.post("/metrics"),
        }
        health = [
            client.get(p).status_code for p in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")
        ]
        functions = client.get("/functions").json()
        metrics = client.get("/metrics").text
    statuses = {what: r.status_code for what, r in answers.items()}
    assert statuses == {
        "unknown function": 404, "unknown version": 404, "too large": 413, "no route": 404, "v2 unknown": 404,
        "wrong method": 405,
    }  # fmt: skip
    assert all(set(r.json()) == {"error"} and "x-request-id" in r.headers for r in answers.values())
    assert "has no version '9'; it has 1" in answers["unknown version"].json()["error"]
    assert health == [200, 200, 200, 200]
    idle_double = {"name": "double", "versions": {"1": {"weight": 100, "desired": 0, "ready": 0}}}
    assert functions == {"functions": [idle_double], "target": "local"}
    assert 'fnserve_gateway_requests_total{function="double",status="404",version="-"} 1.0' in metrics
    assert "x-function-version" not in answers["unknown version"].headers


def test_a_version_that_never_gets_ready_holds_requests_within_bounds(tmp_path: Path) -> None:
    broken = deployment("double", ("1", "bad_hint", 100, "latest"), min_replicas=0)
    options = dataclasses.replace(FAST, hold_timeout_s=1.5, hold_queue=1)
    with running_gateway(tmp_path, [broken], options) as gw:
        held: list[httpx.Response] = []
        first = threading.Thread(
            target=lambda: held.append(httpx.get(f"{gw.url}/function/double?x=1", timeout=10))
        )
        first.start()
        while not gw.gateway.functions["double"].stats.held:
            time.sleep(0.01)
        second = httpx.get(f"{gw.url}/function/double?x=1", timeout=10)
        first.join()
        logs = gw.admin("GET", "/functions/double/logs?tail=50").json()["lines"]
    assert second.status_code == 429 and second.headers["retry-after"] == "2"
    assert held[0].status_code == 503 and held[0].headers["retry-after"] == "5"
    assert "became ready within 1.5 s" in held[0].json()["error"]
    assert any("bad_hint" in line for line in logs)  # why: the replica's own error, in `fn logs`


@pytest.mark.slow
def test_token_protected_predictions_and_the_aggregated_functions(tmp_path: Path) -> None:
    options = dataclasses.replace(FAST, protect_predictions=True)
    running = deployment("double", ("1", "double", 100, "latest"), min_replicas=1)
    with running_gateway(tmp_path, [running], options) as gw:
        gw.wait_ready("double", "1", 1)
        refused = httpx.get(f"{gw.url}/function/double?x=2")
        served = httpx.get(f"{gw.url}/function/double?x=2", headers={"Authorization": f"Bearer {TOKEN}"})
        functions = httpx.get(f"{gw.url}/functions").json()["functions"]
    assert refused.status_code == 401 and served.json() == {"predictions": [4.0]}
    described = functions[0]["versions"]["1"]["served"]
    assert described["name"] == "double" and [i["name"] for i in described["inputs"]] == ["x"]

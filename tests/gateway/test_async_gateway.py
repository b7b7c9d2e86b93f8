"""Asynchronous calls on the gateway: accepted by the gateway itself, sent through its proxy (so a
function scaled to zero is woken by its backlog), the same status URLs as `fn serve`, the token where
predictions need it, and bad input refused naming the problem. Real gateway, real replicas.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateways import FAST, TOKEN, deployment, running_gateway

pytestmark = pytest.mark.slow

ASYNC = {"Prefer": "respond-async"}
FROM_ZERO = deployment("double", ("1", "double", 100, "latest"), min_replicas=0)
QUICK = {"scan_interval_s": 0.1, "lease_s": 1.0}


def wait_done(client: httpx.Client, url: str, timeout_s: float = 40.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (doc := client.get(url).json()).get("status") not in ("done", "failed"):
        assert time.monotonic() < deadline, f"still {doc}"
        time.sleep(0.05)
    return dict(doc)


def test_a_backlog_wakes_a_function_scaled_to_zero(tmp_path: Path) -> None:
    with (
        running_gateway(tmp_path, [FROM_ZERO], async_calls=QUICK) as gw,
        httpx.Client(base_url=gw.url, timeout=30) as client,
    ):
        accepted = [client.post("/function/double", json={"x": i}, headers=ASYNC) for i in range(5)]
        ready_at_accept = gw.status("double")["versions"][0]["ready"]
        pinned = client.post("/function/double@1", json={"instances": [{"x": 7}]}, headers=ASYNC)
        docs = [wait_done(client, a.headers["location"]) for a in [*accepted, pinned]]
        raw = client.get(f"{accepted[0].headers['location']}/result")
        metrics = client.get("/metrics").text
    assert {a.status_code for a in accepted} == {202} and ready_at_accept == 0
    assert accepted[0].headers["location"].startswith("/async/double.")
    assert [d["result"] for d in docs] == [{"predictions": [2.0 * i]} for i in range(5)] + [
        {"predictions": [14.0]}
    ]
    assert {d["version"] for d in docs} == {"1"}  # the deployment version that answered
    assert (
        raw.status_code == 200
        and raw.json() == {"predictions": [0.0]}
        and raw.headers["x-function-version"] == "1"
    )
    assert 'fnserve_gateway_async_calls_completed_total{function="double"} 6.0' in metrics
    assert 'fnserve_gateway_cold_starts_total{function="double",version="1"} 1.0' in metrics


def test_bad_requests_are_refused_naming_the_problem(tmp_path: Path) -> None:
    options = dataclasses.replace(FAST, max_body_bytes=100)
    with (
        running_gateway(tmp_path, [FROM_ZERO], options, async_calls=QUICK) as gw,
        httpx.Client(base_url=gw.url) as client,
    ):
        answers = {
            "unknown function": client.post("/function/nope", json={"x": 1}, headers=ASYNC),
            "unknown version path": client.post("/v2/models/nope/infer", json={}, headers=ASYNC),
            "too large": client.post("/function/double", content=b"x" * 101, headers=ASYNC),
            "bad callback": client.post(
                "/function/double", json={"x": 1}, headers={**ASYNC, "Callback-URL": "mailto:me@example.com"}
            ),
            "unknown id": client.get("/async/double.0123456789abcdef0123456789abcdef"),
            "malformed id": client.get("/async/double.xyz"),
        }
        desired = gw.status("double")["versions"][0]["desired"]
    statuses = {what: r.status_code for what, r in answers.items()}
    assert statuses == {
        "unknown function": 404, "unknown version path": 404, "too large": 413, "bad callback": 400,
        "unknown id": 404, "malformed id": 404,
    }  # fmt: skip
    assert all(set(r.json()) == {"error"} for r in answers.values())
    assert "no function named 'nope' is deployed here" in answers["unknown function"].json()["error"]
    assert desired == 0  # nothing refused woke the function


def test_with_the_prediction_token_calls_need_it_too(tmp_path: Path) -> None:
    options = dataclasses.replace(FAST, protect_predictions=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with (
        running_gateway(tmp_path, [FROM_ZERO], options, async_calls=QUICK) as gw,
        httpx.Client(base_url=gw.url, timeout=30) as client,
    ):
        refused = client.post("/function/double", json={"x": 1}, headers=ASYNC)
        accepted = client.post("/function/double", json={"x": 1}, headers={**ASYNC, **auth})
        url = accepted.headers["location"]
        unauthorized = client.get(url)
        deadline = time.monotonic() + 40
        while (doc := client.get(url, headers=auth).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert refused.status_code == 401 and accepted.status_code == 202 and unauthorized.status_code == 401
    assert doc["result"] == {"predictions": [2.0]}  # sent through the proxy with the gateway's token


def test_without_a_queue_the_preference_is_ignored(tmp_path: Path) -> None:
    """A gateway made without asynchronous calls answers at once, and its replicas never see the
    preference (they would answer 202 with a status URL the gateway does not route)."""
    awake = deployment("double", ("1", "double", 100, "latest"), min_replicas=1)
    with running_gateway(tmp_path, [awake]) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        gw.wait_ready("double", "1", 1)
        answer = client.post("/function/double", json={"x": 3}, headers=ASYNC)
    assert answer.status_code == 200 and answer.json() == {"predictions": [6.0]}

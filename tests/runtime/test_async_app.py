"""Asynchronous calls on the runtime's HTTP surface, in-process: 202 and its headers, the status and
result URLs, the same answer as the synchronous call on every protocol, and every bad input a 4xx
naming the problem. The queue itself is tested in test_async_queue.py, callbacks in
test_async_callbacks.py, a SIGKILL in the middle in test_async_restart.py.
"""

from __future__ import annotations

import gzip
import logging
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

ASYNC = {"Prefer": "respond-async"}


def wait_done(client: TestClient, url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        doc: dict[str, Any] = client.get(url).json()
        if doc.get("status") in ("done", "failed"):
            return doc
        assert time.monotonic() < deadline, f"still {doc.get('status')}: {doc}"
        time.sleep(0.01)


def submit(client: TestClient, path: str, **kwargs: Any) -> str:
    answer = client.post(path, headers={**ASYNC, **kwargs.pop("headers", {})}, **kwargs)
    assert answer.status_code == 202, answer.text
    return str(answer.headers["location"])


def test_a_call_is_accepted_with_202_and_answered_at_its_status_url(serve: Any) -> None:
    with serve("double") as client:
        answer = client.post("/function/double", json={"x": 4}, headers=ASYNC)
        body = answer.json()
        doc = wait_done(client, answer.headers["location"])
        raw = client.get(f"{answer.headers['location']}/result")
    assert answer.status_code == 202
    assert answer.headers["location"] == body["status_url"] == f"/async/{body['id']}"
    assert answer.headers["preference-applied"] == "respond-async" and answer.headers["retry-after"] == "1"
    assert body["status"] == "pending" and body["function"] == "double"
    assert body["id"].startswith("double.") and len(body["id"]) == len("double.") + 32
    assert doc["status"] == "done" and doc["http_status"] == 200 and doc["attempts"] == 1
    assert doc["result"] == {"predictions": [8.0]}
    assert doc["accepted_at"] <= doc["started_at"] <= doc["finished_at"] < doc["expires_at"]
    assert raw.status_code == 200 and raw.json() == {"predictions": [8.0]}
    assert raw.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/function/double", {"instances": [{"x": 1}, {"x": 2.5}]}),
        (
            "/v2/models/double/infer",
            {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]},
        ),
        ("/v1/models/double:predict", {"instances": [1.0, 5.0]}),
    ],
)
def test_the_result_is_what_the_synchronous_call_answers(serve: Any, path: str, payload: Any) -> None:
    with serve("double") as client:
        synchronous = client.post(path, json=payload)
        url = submit(client, path, json=payload)
        doc = wait_done(client, url)
        raw = client.get(f"{url}/result")
    assert doc["result"] == synchronous.json() and raw.content == synchronous.content


def test_the_result_names_the_version_that_computed_it(serve: Any, publish_weight: Any) -> None:
    publish_weight("3")
    with serve("weighted") as client:
        doc = wait_done(client, submit(client, "/function/weighted@1", json={"x": 2}))
        gzipped = submit(
            client,
            "/function/weighted",
            content=gzip.compress(b'{"x": 5}'),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        other = wait_done(client, gzipped)
    assert doc["result"] == {"predictions": [6.0]} and doc["version"] == "1"
    assert other["result"] == {"predictions": [15.0]}


def test_bad_inputs_fail_the_call_with_the_synchronous_error(serve: Any) -> None:
    """Inputs are checked when the call runs, by the same code as a synchronous call: the outcome
    is ``failed`` with the 4xx and the message a synchronous caller would have had."""
    with serve("double") as client:
        bad_value = client.post("/function/double", json={"x": "lots"})
        bad_json = client.post("/function/double", content=b"{", headers={"content-type": "application/json"})
        failed_value = wait_done(client, submit(client, "/function/double", json={"x": "lots"}))
        failed_json = wait_done(
            client,
            submit(client, "/function/double", content=b"{", headers={"content-type": "application/json"}),
        )
        pinned = wait_done(client, submit(client, "/function/double@7", json={"x": 1}))
    assert failed_value["status"] == "failed" and failed_value["http_status"] == 422
    assert failed_value["error"] == bad_value.json()["error"] and failed_value["result"] == bad_value.json()
    assert failed_json["http_status"] == 400 and failed_json["error"] == bad_json.json()["error"]
    assert pinned["http_status"] == 404
    assert pinned["error"].startswith("version '7' of 'double' is not served")


def test_bad_requests_are_refused_at_once_naming_the_problem(serve: Any) -> None:
    with serve("double", max_body_bytes=1000) as client:
        answers = {
            "unknown function": client.post("/function/nope", json={"x": 1}, headers=ASYNC),
            "too large": client.post("/function/double", content=b"x" * 1001, headers=ASYNC),
            "form body": client.post("/function/double", data={"x": "1"}, headers=ASYNC),
            "bad encoding": client.post(
                "/function/double", content=b"{}", headers={**ASYNC, "content-encoding": "br"}
            ),
            "ftp callback": client.post(
                "/function/double", json={"x": 1}, headers={**ASYNC, "Callback-URL": "ftp://files.example/x"}
            ),
            "no host": client.post(
                "/function/double", json={"x": 1}, headers={**ASYNC, "Callback-URL": "http://"}
            ),
            "bad port": client.post(
                "/function/double",
                json={"x": 1},
                headers={**ASYNC, "Callback-URL": "http://h.example:99999/"},
            ),
            "unknown id": client.get("/async/double.0123456789abcdef0123456789abcdef"),
            "malformed id": client.get("/async/not-an-id"),
            "unknown id's result": client.get("/async/double.0123456789abcdef0123456789abcdef/result"),
            "delete": client.delete("/async/double.0123456789abcdef0123456789abcdef"),
        }
    statuses = {what: answer.status_code for what, answer in answers.items()}
    assert statuses == {
        "unknown function": 404, "too large": 413, "form body": 415, "bad encoding": 415, "ftp callback": 400,
        "no host": 400, "bad port": 400, "unknown id": 404, "malformed id": 404, "unknown id's result": 404,
        "delete": 405,
    }  # fmt: skip
    assert all(set(answer.json()) == {"error"} for answer in answers.values())
    assert "see GET /functions" in answers["unknown function"].json()["error"]
    assert (
        answers["ftp callback"].json()["error"]
        == "Callback-URL: 'ftp://files.example/x' is not an http(s) URL"
    )
    assert "the id is unknown, or its outcome expired" in answers["unknown id"].json()["error"]
    assert "32 hex digits" in answers["malformed id"].json()["error"]


def test_a_preference_on_a_get_is_answered_at_once(serve: Any) -> None:
    """RFC 7240 lets a server ignore a preference; a GET is safe and makes nothing to come back to."""
    with serve("double") as client:
        answer = client.get("/function/double?x=2", headers=ASYNC)
    assert answer.status_code == 200 and answer.json() == {"predictions": [4.0]}
    assert "preference-applied" not in answer.headers


def test_with_max_queued_0_calls_are_answered_at_once(serve: Any) -> None:
    with serve("double", async_max_queued=0) as client:
        answer = client.post("/function/double", json={"x": 2}, headers=ASYNC)
        status = client.get("/async/double.0123456789abcdef0123456789abcdef")
    assert answer.status_code == 200 and answer.json() == {"predictions": [4.0]}
    assert status.status_code == 404


def test_a_store_served_over_http_takes_no_calls(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Checkpoints may come from an http(s) store; a queue cannot be written there: the preference
    is ignored, saying why once, until ``[async] queue`` names a writable store."""
    with caplog.at_level(logging.WARNING), serve("double", store="http://127.0.0.1:9/models") as client:
        answer = client.post("/function/double", json={"x": 2}, headers=ASYNC)
    assert answer.status_code == 200 and answer.json() == {"predictions": [4.0]}
    assert "asynchronous calls are off: their queue http://127.0.0.1:9/models/_async/serve" in caplog.text


def test_calls_wait_for_a_function_that_is_loading(serve: Any) -> None:
    """Accepted while the model loads (or never loads): pending, not failed; and bounded."""
    with serve("missing_weights", wait_ready=False, async_max_queued=2) as client:
        first = submit(client, "/function/missing_weights", json={"x": 1})
        submit(client, "/function/missing_weights", json={"x": 2})
        full = client.post("/function/missing_weights", json={"x": 3}, headers=ASYNC)
        time.sleep(0.3)
        doc = client.get(first).json()
        raw = client.get(f"{first}/result")
    assert doc["status"] == "pending" and set(doc) == {"id", "function", "status", "accepted_at"}
    assert raw.status_code == 202 and raw.json() == doc and raw.headers["retry-after"] == "1"
    assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
    assert "is full (2 calls accepted and not finished, max_queued 2)" in full.json()["error"]


def test_the_metrics_count_calls(serve: Any) -> None:
    with serve("double") as client:
        wait_done(client, submit(client, "/function/double", json={"x": 1}))
        wait_done(client, submit(client, "/function/double", json={"x": "bad"}))
        text = client.get("/metrics").text
    for line in (
        'fnserve_async_calls_accepted_total{function="double"} 2.0',
        'fnserve_async_calls_completed_total{function="double"} 1.0',
        'fnserve_async_calls_failed_total{function="double"} 1.0',
        'fnserve_async_calls_queued{function="double"} 0.0',
        'fnserve_async_calls_running{function="double"} 0.0',
    ):
        assert line in text


def test_a_callback_url_is_never_shown(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = "https://hooks:pw-4711@127.0.0.1:9/hook/tok-9f8e7d6c?sig=s3cr3tsig"
    with caplog.at_level(logging.DEBUG), serve("double", async_callback_attempts=1) as client:
        answer = client.post("/function/double", json={"x": 1}, headers={**ASYNC, "Callback-URL": secret})
        doc = wait_done(client, answer.headers["location"])
        deadline = time.monotonic() + 10
        while client.get(answer.headers["location"]).json()["callback"]["status"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        final = client.get(answer.headers["location"]).json()
    shown = answer.text + str(doc) + str(final) + caplog.text
    for part in ("pw-4711", "tok-9f8e7d6c", "s3cr3tsig", "hooks:"):
        assert part not in shown
    assert final["callback"]["status"] == "failed" and final["callback"]["attempts"] == 1
    assert final["callback"]["error"].startswith("could not be reached")

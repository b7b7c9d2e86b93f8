"""Checkpoints through the app: not ready without one, ready by itself once published, following
newer versions, keeping the old one when a new one fails to load, and pinned versions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def until(probe: Callable[[], T], what: str, timeout_s: float = 10.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return result


def predict(client: Any, x: float = 3.0, target: str = "weighted") -> tuple[int, str | None, Any]:
    response = client.get(f"/function/{target}?x={x}")
    return response.status_code, response.headers.get("x-model-version"), response.json()


def weighted_info(client: Any) -> dict[str, Any]:
    (info,) = client.get("/functions").json()["functions"]
    return dict(info)


def test_not_ready_while_the_checkpoint_is_missing(serve: Any) -> None:
    with serve("weighted", wait_ready=False) as client:
        ready = client.get("/readyz")
        response = client.get("/function/weighted?x=1")
        info = until(lambda: weighted_info(client)["error"] and weighted_info(client), "a load attempt")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
    body = ready.json()
    assert body.pop("errors")["weighted"].startswith("checkpoint 'weighted' has no published version in ")
    assert body == {"ready": False, "draining": False, "functions": {"weighted": False}}
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": "function 'weighted' is not ready yet (its model is loading); retry shortly"
    }
    assert info["ready"] is False and "has no published version" in info["error"]


def test_becomes_ready_by_itself_once_a_version_is_published(serve: Any, publish_weight: Any) -> None:
    with serve("weighted", wait_ready=False) as client:
        assert client.get("/readyz").status_code == 503
        assert publish_weight("2") == 1
        until(lambda: client.get("/readyz").status_code == 200, "readiness after publishing")
        assert predict(client) == (200, "1", {"predictions": [6.0]})


def test_a_newer_version_is_loaded_and_served_after_the_reload_interval(
    serve: Any, publish_weight: Any
) -> None:
    publish_weight("2")
    with serve("weighted") as client:
        assert predict(client) == (200, "1", {"predictions": [6.0]})
        assert publish_weight("5") == 2
        assert until(lambda: predict(client)[1] == "2" and predict(client), "version 2") == (
            200,
            "2",
            {"predictions": [15.0]},
        )


def test_a_version_whose_loader_fails_leaves_the_old_version_serving(serve: Any, publish_weight: Any) -> None:
    publish_weight("2")
    with serve("weighted") as client:
        assert publish_weight("garbage") == 2
        info = until(lambda: weighted_info(client)["error"] and weighted_info(client), "the failed load")
        assert "ValueError" in info["error"] and info["version"] == 1 and info["ready"] is True
        assert client.get("/readyz").status_code == 200
        assert predict(client) == (200, "1", {"predictions": [6.0]})


def test_a_failed_version_is_not_reloaded_every_interval(
    serve: Any, publish_weight: Any, caplog: pytest.LogCaptureFixture
) -> None:
    publish_weight("2")
    with serve("weighted") as client:
        publish_weight("garbage")
        until(lambda: weighted_info(client)["error"], "the failed load")
        time.sleep(1.0)  # five reload intervals of 0.2 s
        assert publish_weight("4") == 3
        until(lambda: weighted_info(client)["version"] == 3, "version 3 after the failed 2")
    failures = [r for r in caplog.records if "not loaded" in r.getMessage()]
    assert len(failures) == 1


def test_pinned_version_is_served_when_it_is_the_one_in_memory(serve: Any, publish_weight: Any) -> None:
    publish_weight("2")
    with serve("weighted") as client:
        assert predict(client, target="weighted@1") == (200, "1", {"predictions": [6.0]})
        status, _, body = predict(client, target="weighted@2")
    assert status == 404
    assert body == {"error": "version '2' of 'weighted' is not served here (serving version 1)"}


def test_functions_lists_the_checkpoint_and_its_versions(serve: Any, publish_weight: Any) -> None:
    publish_weight("2")
    with serve("weighted") as client:
        publish_weight("3")
        until(lambda: weighted_info(client)["version"] == 2, "version 2")
        info = weighted_info(client)
    assert info["checkpoint"] == "weighted" and info["wanted_version"] == "latest"
    assert info["available_versions"] == [1, 2] and info["ready"] is True and info["error"] is None
    assert info["inputs"] == [{"name": "x", "type": "float", "required": True}]

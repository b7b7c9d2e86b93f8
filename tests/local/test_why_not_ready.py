"""A replica that never becomes ready says why: held requests that time out get a 503 whose
message carries the first line of the loader's own error (or the replica's last words when it
exited), redacted, not only "see fn logs". Real gateway, real replica processes, file:// store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx

from fnserve.runtime.store import CheckpointStore
from tests.support.gateways import FAST, deployment, running_gateway, settings_for, until

OPTIONS = dataclasses.replace(FAST, hold_timeout_s=1.5)


def test_a_replica_whose_loader_fails_names_the_loaders_error_redacted(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")  # published without its weights file
    CheckpointStore(settings_for(tmp_path).store).publish("missing_weights", tmp_path / "ckpt")
    broken = deployment("missing_weights", ("1", "missing_weights", 100, "latest"), min_replicas=1)
    with running_gateway(tmp_path, [broken], OPTIONS) as gw:

        def load_failed() -> bool:  # the replica runs, unready, and says so on /readyz
            lines = gw.admin("GET", "/functions/missing_weights/logs?tail=100").json()["lines"]
            return any("model.bin is missing" in line for line in lines)

        until(load_failed, "the replica's failed load", 60)
        answer = httpx.get(f"{gw.url}/function/missing_weights?x=1", timeout=10)
    error = answer.json()["error"]
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "no replica of missing_weights@1 became ready within 1.5 s: " in error, error
    assert "loader of 'missing_weights' failed: RuntimeError: weights file model.bin is missing" in error
    assert "https://***@models.example/recs/3" in error and "hunter2" not in error
    assert "second line" not in error and error.endswith("; see `fn logs missing_weights`")


def test_a_replica_that_exits_before_it_is_ready_names_its_last_words(tmp_path: Path) -> None:
    broken = deployment("double", ("1", "bad_hint", 100, "latest"), min_replicas=1)
    with running_gateway(tmp_path, [broken], OPTIONS) as gw:
        until(
            lambda: gw.platform.last_failure("double", "1"), "a replica that exited before it was ready", 60
        )
        answer = httpx.get(f"{gw.url}/function/double?x=1", timeout=10)
    error = answer.json()["error"]
    assert answer.status_code == 503, answer.text
    assert "no replica of double@1 became ready within 1.5 s: " in error and "bad_hint" in error, error
    assert "python -m fnserve.runtime: error:" not in error  # the program's prefix is not the reason
    assert "Traceback" not in error and "\n" not in error

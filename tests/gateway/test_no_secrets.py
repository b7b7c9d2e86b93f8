"""The gateway shows no store credentials: a replica that cannot reach its store logs it, and
`fn logs` (the admin API's logs) and status name the store redacted."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import httpx
import pytest

from fnserve.local.platform import LocalPlatform
from tests.support import gateways
from tests.support.gateways import FAST, deployment, running_gateway, settings_for, until


def test_replica_logs_and_status_name_the_store_redacted(
    tmp_path: Path, failing_http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = f"pw-{uuid.uuid4().hex[:12]}"
    store = f"http://reader:{password}@{failing_http}/store"
    settings = settings_for(tmp_path, store=store)
    monkeypatch.setattr(gateways, "settings_for", lambda project: settings)  # the gateway's platform
    weighted = deployment("weighted", ("1", "weighted", 100, "latest"), min_replicas=1)
    with running_gateway(tmp_path, [weighted], dataclasses.replace(FAST, hold_timeout_s=1.0)) as gw:
        assert isinstance(gw.platform, LocalPlatform) and gw.platform.settings.store == store

        def failed_load() -> list[str] | None:
            lines = gw.admin("GET", "/functions/weighted/logs?tail=200").json()["lines"]
            return lines if any("not loaded" in line for line in lines) else None

        lines = until(failed_load, "the replica to report its failed load", 60)
        status = gw.admin("GET", "/status").text
        answer = httpx.get(f"{gw.url}/function/weighted?x=1", timeout=10)
    text = "\n".join(lines)
    assert f"storage at http://***@{failing_http}/store/weighted is unavailable" in text
    for shown in (text, status, answer.text):
        assert password not in shown and "reader:" not in shown

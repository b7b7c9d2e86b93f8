"""The warm pool on the local platform, through a real gateway: a version that may scale to zero
keeps a prepared standby process, which a wake-up claims (SIGUSR1) instead of starting a process;
the pool refills after, is turned off with ``warm_pool = 0``, and falls back to plain starts with a
warning when memory is short or a standby dies. A cold start past the hold timeout answers 503
naming the part it is still in.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from pathlib import Path

import httpx
import pytest

from fnserve.runtime.store import CheckpointStore
from tests.support.gateways import FAST, deployment, running_gateway, until

pytestmark = pytest.mark.slow


def pooled(**scaling: object) -> list:  # type: ignore[type-arg]
    return [deployment("double", ("1", "double", 100, "latest"), min_replicas=0, **scaling)]


def standbys(gw) -> int:  # type: ignore[no-untyped-def]
    return int(gw.status("double")["versions"][0]["standby"])


def test_a_wake_up_claims_the_prepared_standby_and_the_pool_refills(tmp_path: Path) -> None:
    with running_gateway(tmp_path, pooled(scale_to_zero_after_s=1)) as gw:
        until(lambda: standbys(gw) == 1, "a prepared standby", 60)
        (standby,) = [p for p in gw.platform._standbys if not p.draining]
        answer = httpx.get(f"{gw.url}/function/double", params={"x": 21}, timeout=60)
        assert answer.status_code == 200 and answer.json() == {"predictions": [42.0]}
        replica = gw.status("double")["versions"][0]["replicas"][0]
        assert replica["id"] == str(standby.popen.pid)  # the standby became the replica
        cold = until(lambda: gw.status("double")["last_cold_start"], "the cold start's record", 40)
        assert cold["standby"] is True and cold["import_s"] == 0.0
        assert cold["total_s"] >= cold["load_s"] and "first_answer_s" in cold
        until(lambda: standbys(gw) == 1, "the pool refilled after the replica was ready", 60)
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert (
            'fnserve_gateway_cold_start_seconds_count{function="double",part="first_answer"} 1.0' in metrics
        )

        gw.admin("POST", "/functions/double/scale", {"warm_pool": 0}).raise_for_status()
        until(lambda: standbys(gw) == 0, "the pool emptied", 20)
        until(lambda: all(p.popen.poll() is not None for p in gw.platform._standbys), "standbys exited", 20)
        bad = gw.admin("POST", "/functions/double/scale", {"warm_pool": -1})
        assert bad.status_code == 422 and "warm_pool" in bad.json()["error"]


def test_short_of_memory_means_plain_starts_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("fnserve.gateway.warmpool.available_memory_bytes", lambda: 64 << 20)
    with caplog.at_level(logging.WARNING, "fnserve.gateway"), running_gateway(tmp_path, pooled()) as gw:
        until(lambda: "not enough memory for a warm-pool standby" in caplog.text, "the warning", 20)
        assert standbys(gw) == 0 and not gw.platform._standbys
        answer = httpx.get(f"{gw.url}/function/double", params={"x": 1}, timeout=60)
        assert answer.status_code == 200
        cold = until(lambda: gw.status("double")["last_cold_start"], "the cold start's record", 40)
        assert cold["standby"] is False and cold["import_s"] > 0


def test_a_standby_that_dies_is_reported_and_starts_stay_plain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "fnserve.gateway"), running_gateway(tmp_path, pooled()) as gw:
        until(lambda: standbys(gw) == 1, "a prepared standby", 60)
        os.kill(gw.platform._standbys[0].popen.pid, signal.SIGKILL)
        until(lambda: "a warm-pool standby exited" in caplog.text, "the warning", 20)
        answer = httpx.get(f"{gw.url}/function/double", params={"x": 1}, timeout=60)
        assert answer.status_code == 200
        cold = until(lambda: gw.status("double")["last_cold_start"], "the cold start's record", 40)
        assert cold["standby"] is False
        assert standbys(gw) == 0  # paused for POOL_RETRY_S: no new standby right away


def test_a_cold_start_past_the_hold_timeout_names_the_slow_part(tmp_path: Path) -> None:
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "seconds.txt").write_text("30")
    CheckpointStore(f"file://{tmp_path}/store", cache_dir=tmp_path / "publish-cache").publish(
        "slow_load", folder
    )
    d = deployment("slow_load", ("1", "slow_load", 100, "latest"), min_replicas=0, warm_pool=0)
    with running_gateway(tmp_path, [d], dataclasses.replace(FAST, hold_timeout_s=4)) as gw:
        answer = httpx.get(f"{gw.url}/function/slow_load", params={"x": 1}, timeout=60)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    error = answer.json()["error"]
    assert "no replica of slow_load@1 became ready within 4 s" in error
    assert "its replica is still loading the model of version 1 (for " in error, error

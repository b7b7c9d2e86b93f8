"""A warm pool's standby (``python -m fnserve.runtime FOLDER --standby``): it fetches its checkpoint
and imports its framework at once, serves only after SIGUSR1, and then pays only for the load; a
starting runtime says what its load is doing, and ``/readyz?wait_s=`` answers the moment it is ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fnserve.local.platform import read_address_file
from fnserve.runtime.store import CheckpointStore
from tests.support.gateways import FNS, until
from tests.support.optimizing import FOLDER as OPTIMIZABLE
from tests.support.optimizing import publish


def start(tmp_path: Path, folder: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    address = tmp_path / f"address-{time.time_ns()}.json"
    env = {
        **os.environ,
        "FNSERVE_STORE": f"file://{tmp_path}/store",
        "FNSERVE_CACHE": str(tmp_path / "cache"),
    }
    command = [sys.executable, "-m", "fnserve.runtime", str(folder), "--port", "0"]
    with open(tmp_path / f"{address.stem}.log", "wb") as log:
        proc = subprocess.Popen(
            [*command, "--address-file", str(address), *flags], env=env, stdout=log, stderr=log
        )
    url = until(lambda: read_address_file(address, proc.pid) or None, "the address file", 60)
    return proc, url


def readyz(url: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{url}/readyz", params=params, timeout=40)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_standby_prepares_then_serves_on_sigusr1_without_importing_again(tmp_path: Path) -> None:
    publish(f"file://{tmp_path}/store", tmp_path / "publish-cache", tmp_path)
    proc, url = start(tmp_path, OPTIMIZABLE, "--standby")
    try:
        said = until(lambda: (r := readyz(url).json()).get("prepared") and r, "the standby prepared", 90)
        assert said["standby"] is True and said["ready"] is False
        assert "standing by" in said["loading"]["optimizable"]
        assert list((tmp_path / "cache").glob("optimizable-1-*")), (
            "the checkpoint was fetched while standing by"
        )
        refused = httpx.post(f"{url}/function/optimizable", json={"instances": [{"x": 0.5, "kind": "a"}]})
        assert refused.status_code == 503  # not a model in memory until asked

        proc.send_signal(signal.SIGUSR1)
        began = time.monotonic()
        ready = readyz(url, wait_s=30)  # answered the moment it is ready, not after 30 s
        assert ready.status_code == 200 and ready.json()["standby"] is False
        assert time.monotonic() - began < 25
        answer = httpx.post(f"{url}/function/optimizable", json={"instances": [{"x": 0.5, "kind": "a"}]})
        assert answer.status_code == 200, answer.text
        info = httpx.get(f"{url}/functions").json()
    finally:
        stop(proc)
    entry = info["functions"][0]
    timeline = info["timeline"]
    assert entry["framework_import_s"] == 0.0  # TensorFlow came in while it stood by
    assert timeline["process"] < timeline["function_imported"] < timeline["prepared"] < timeline["activated"]
    assert timeline["activated"] < timeline["ready"]

    plain, url = start(tmp_path, OPTIMIZABLE)  # the same start without a standby pays for the import
    try:
        assert readyz(url, wait_s=30).status_code == 200
        entry = httpx.get(f"{url}/functions").json()["functions"][0]
    finally:
        stop(plain)
    assert entry["framework_import_s"] > 0.05 and "activated" not in entry


def publish_slow_load(store_root: str, work: Path, seconds: float) -> None:
    folder = work / f"slow-{seconds}"
    folder.mkdir()
    (folder / "seconds.txt").write_text(str(seconds))
    CheckpointStore(store_root, cache_dir=work / "publish-cache").publish("slow_load", folder)


def test_readyz_names_what_a_load_is_doing_and_refuses_a_bad_wait(serve: Any, tmp_path: Path) -> None:
    publish_slow_load(f"file://{tmp_path}/store", tmp_path, 3.0)
    with serve("slow_load", wait_ready=False) as client:

        def loading_the_model() -> Any:  # the fetch before it is named as well, for a few ms
            said = client.get("/readyz").json()
            doing = said.get("loading", {}).get("slow_load", "")
            return said if doing.startswith("loading the model") else None

        said = until(loading_the_model, "the model's load", 10)
        assert said["ready"] is False
        assert said["loading"]["slow_load"].startswith("loading the model of version 1 (for ")
        bad = client.get("/readyz", params={"wait_s": "soon"})
        assert bad.status_code == 400 and "wait_s must be a number of seconds" in bad.json()["error"]
        began = time.monotonic()
        assert client.get("/readyz", params={"wait_s": "0.3"}).status_code == 503  # waited, then said no
        assert 0.25 < time.monotonic() - began < 2.5
        assert client.get("/readyz", params={"wait_s": "20"}).status_code == 200  # the moment it loaded


def test_a_plain_start_has_a_timeline_and_no_standby_flag(tmp_path: Path) -> None:
    proc, url = start(tmp_path, FNS / "double")
    try:
        assert readyz(url, wait_s=20).status_code == 200
        body, info = readyz(url).json(), httpx.get(f"{url}/functions").json()
    finally:
        stop(proc)
    assert "standby" not in body
    assert info["timeline"]["process"] <= info["timeline"]["runtime_imported"] <= info["timeline"]["ready"]

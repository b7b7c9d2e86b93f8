"""A real `fn gateway` (and its replicas) killed with SIGKILL in the middle of a backlog of calls to
a function scaled to zero, then started again: every call answered 202 is done, each recorded
once, and only calls cut mid-run ran twice (tests/support/fns/tally counts the runs).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from fnserve import Client
from tests.support.gateways import FNS, TOKEN

pytestmark = pytest.mark.slow

CALLS = 40


class Gateway:
    """`fn gateway --port 0` in a session of its own: a SIGKILL of the group takes its replicas too."""

    def __init__(self, project: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fnserve.cli", "gateway", "--port", "0"],
            cwd=project,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (line := self.proc.stdout.readline()):
            lines.append(line)
            if found := re.search(r"listening on (http://\S+)", line):
                self.url = found.group(1)
                threading.Thread(target=lambda: lines.extend(self.proc.stdout), daemon=True).start()  # type: ignore[arg-type]
                return
        self.kill()
        raise AssertionError("fn gateway did not start:\n" + "".join(lines))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def tallied(path: Path) -> collections.Counter[str]:
    return collections.Counter(path.read_text().split()) if path.exists() else collections.Counter()


def test_a_sigkilled_gateway_loses_no_call_and_records_each_once(tmp_path: Path) -> None:
    tally = tmp_path / "tally.txt"
    env = {
        "FNSERVE_STORE": f"file://{tmp_path}/store",
        "FNSERVE_CACHE": str(tmp_path / "cache"),
        "FNSERVE_GATEWAY_TOKEN": TOKEN,
        "FNSERVE_ASYNC_LEASE_S": "1",
        "FNSERVE_ASYNC_SCAN_INTERVAL_S": "0.2",
        "FNSERVE_TEST_TALLY": str(tally),
        "COLUMNS": "200",
    }
    gateway = Gateway(tmp_path, env)
    try:
        deployed = httpx.put(
            f"{gateway.url}/admin/functions/tally",
            json={"image": str(FNS / "tally"), "scaling": {"min_replicas": 0}},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert deployed.status_code == 200, deployed.text
        with Client(gateway.url) as client:
            ids = {client.submit("tally", {"token": f"g{i}", "seconds": 0.05}): f"g{i}" for i in range(CALLS)}
        deadline = time.monotonic() + 60
        while sum(tallied(tally).values()) < CALLS // 4:  # woken from zero, a quarter done: kill it all
            assert time.monotonic() < deadline, "the calls did not start"
            time.sleep(0.005)
    finally:
        gateway.kill()
    assert sum(tallied(tally).values()) < CALLS, "all calls ran before the kill: nothing was tested"

    gateway = Gateway(tmp_path, env)
    try:
        with Client(gateway.url) as client:
            results = {call_id: client.result(call_id, timeout_s=60, poll_s=0.05) for call_id in ids}
    finally:
        gateway.kill()

    assert results == {call_id: [token] for call_id, token in ids.items()}
    runs = tallied(tally)
    assert set(runs) == set(ids.values())
    twice = {token: n for token, n in runs.items() if n > 1}
    assert len(twice) <= 8 and all(n == 2 for n in twice.values()), twice
    queue = tmp_path / "store" / "_async" / "gateway" / "tally"
    outcomes = [p for p in (queue / "results").iterdir() if not p.name.endswith(".tmp")]
    assert len(outcomes) == CALLS

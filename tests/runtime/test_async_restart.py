"""A real `fn serve` killed with SIGKILL in the middle of a backlog, and started again: every call
answered 202 is done, each recorded once, and the only calls run twice are those cut mid-run.

The function appends each call's token to a file as it computes it (tests/support/fns/tally), so
the test sees every run, including the ones the kill cut short.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path

import pytest

from fnserve import Client
from tests.support.gateways import FNS
from tests.support.serving import start_serve, stop

pytestmark = pytest.mark.slow

CALLS = 60
QUICK = {"FNSERVE_ASYNC_LEASE_S": "1", "FNSERVE_ASYNC_SCAN_INTERVAL_S": "0.2"}


def tallied(path: Path) -> collections.Counter[str]:
    return collections.Counter(path.read_text().split()) if path.exists() else collections.Counter()


def test_a_sigkill_loses_no_call_and_records_each_once(tmp_path: Path) -> None:
    tally = tmp_path / "tally.txt"
    env = {**QUICK, "FNSERVE_TEST_TALLY": str(tally)}
    served = start_serve(tmp_path, FNS / "tally", extra_env=env)
    try:
        with Client(served.url) as client:
            ids = {client.submit("tally", {"token": f"t{i}", "seconds": 0.03}): f"t{i}" for i in range(CALLS)}
        deadline = time.monotonic() + 20
        while sum(tallied(tally).values()) < CALLS // 3:  # a third has run: kill it mid-backlog
            assert time.monotonic() < deadline, "the calls did not start"
            time.sleep(0.005)
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait()
        ran_before = tallied(tally)
    finally:
        stop(served)
    assert sum(ran_before.values()) < CALLS, "all calls ran before the kill: nothing was tested"

    served = start_serve(tmp_path, FNS / "tally", extra_env=env)
    try:
        with Client(served.url) as client:
            results = {call_id: client.result(call_id, timeout_s=30, poll_s=0.05) for call_id in ids}
            statuses = [client.status(call_id) for call_id in ids]
    finally:
        stop(served)

    assert results == {call_id: [token] for call_id, token in ids.items()}  # none lost, each its own
    runs = tallied(tally)
    assert set(runs) == set(ids.values())
    twice = {token: n for token, n in runs.items() if n > 1}
    assert len(twice) <= 8, f"more calls ran twice than were in flight at the kill: {twice}"
    assert all(n == 2 for n in twice.values())
    assert all(s["status"] == "done" and s["attempts"] in (1, 2) for s in statuses)
    queue = tmp_path / "store" / "_async" / "serve" / "tally"
    outcomes = [p for p in (queue / "results").iterdir() if not p.name.endswith(".tmp")]  # cut writes
    assert len(outcomes) == CALLS  # one outcome per call
    assert [p for p in (queue / "requests").iterdir() if not p.name.endswith(".tmp")] == []

"""``python -m fnserve.runtime``: what images and local replicas run, as a real process.

It imports the runtime alone (no CLI, gateway or deploy target), says where it listens in an
address file, takes its settings as ``fn serve`` does, and answers bad input with one line and
exit status 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fnserve.local.platform import read_address_file
from fnserve.runtime.main import PROG, write_address_file
from fnserve.runtime.settings import settings_here
from tests.support.gateways import FNS, until

ROOT = Path(__file__).resolve().parents[2]
# Not one of these may be imported by a replica: they are what the CLI and the deploy side need.
FORBIDDEN = ("fnserve.cli", "fnserve.gateway", "fnserve.local", "fnserve.docker", "fnserve.k8s")
FORBIDDEN += ("fnserve.images", "fnserve.deploy", "click", "rich", "docker", "kubernetes")

# Runs the entry point as `-m` does, and once /readyz says 200 writes the modules it holds.
PROBE = """
import json, os, runpy, signal, sys, threading, time, urllib.request
def report(address_file, out):
    while not os.path.exists(address_file):
        time.sleep(0.02)
    url = json.load(open(address_file))["url"]
    while True:
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.05)
    json.dump(sorted(sys.modules), open(out, "w"))
    os.kill(os.getpid(), signal.SIGTERM)
out = sys.argv.pop()
sys.argv[0] = "fnserve.runtime"
threading.Thread(target=report, args=(sys.argv[-1], out), daemon=True).start()
runpy.run_module("fnserve.runtime", run_name="__main__", alter_sys=True)
"""


def runtime(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FNSERVE_STORE": f"file://{tmp_path}/store",
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "fnserve.runtime", *args],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_serving_replica_holds_no_cli_gateway_or_deploy_module(tmp_path: Path) -> None:
    address, out = tmp_path / "address.json", tmp_path / "modules.json"
    args = [str(FNS / "double"), "--port", "0", "--address-file", str(address), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FNSERVE_STORE": f"file://{tmp_path}/store"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    modules = json.loads(out.read_text())
    assert "fnserve.runtime.server" in modules and "hypercorn" in modules  # it did serve
    assert [m for m in modules if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)] == []


def test_the_address_file_names_where_it_listens_and_goes_when_it_stops(tmp_path: Path) -> None:
    address = tmp_path / "run" / "double.json"
    proc = runtime(tmp_path, str(FNS / "double"), "--port", "0", "--address-file", str(address))
    try:
        url = until(lambda: read_address_file(address, proc.pid) or proc.poll(), "the address file", 30)
        assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), url
        assert json.loads(address.read_text()) == {"url": url, "pid": proc.pid}
        until(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the replica to be ready", 30)
        assert httpx.get(f"{url}/function/double?x=2").json() == {"predictions": [4.0]}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert not address.exists() and list(address.parent.iterdir()) == []  # no temporary left either


def test_the_address_file_is_replaced_whole_and_a_stale_one_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_address_file(path, "http://127.0.0.1:1234", 42)
    write_address_file(path, "http://127.0.0.1:5678", 43)
    assert read_address_file(path, 43) == "http://127.0.0.1:5678"
    assert read_address_file(path, 42) == ""  # another process's file: not this replica's address
    path.write_text('{"url": "http://127.0.0.1:9"')  # what a torn write would leave: never read as one
    assert read_address_file(path, 43) == "" and read_address_file(tmp_path / "none.json", 43) == ""


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["missing-folder"], {}, "missing-folder: no such file or folder"),
        ([str(FNS / "bad_hint")], {}, "bad_hint"),
        ([str(FNS / "double")], {"FNSERVE_MAX_BODY_BYTES": "lots"}, "(FNSERVE_MAX_BODY_BYTES) must be int"),
        ([str(FNS / "double"), "--checkpoint-version", "newest"], {}, "must be a number or 'latest'"),
    ],
    ids=["missing folder", "broken function file", "bad setting", "bad checkpoint version"],
)
def test_bad_input_is_one_line_and_exit_status_2(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    proc = runtime(tmp_path, *args, "--port", "0", env=env)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:  # one that serves instead of refusing must not outlive the test
        proc.kill()
        proc.wait()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, stderr
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: ") and says in lines[0], stderr


def test_settings_come_as_for_fn_serve_flag_over_environment_over_fn_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fn.toml").write_text(
        '[serve]\nport = 7001\nhost = "127.0.0.2"\n[store]\nroot = "s3://t/r"\n'
    )
    monkeypatch.chdir(tmp_path)
    environ = {"FNSERVE_PORT": "7002", "FNSERVE_HOST": "127.0.0.3"}
    flagged = settings_here(environ, host=None, port=7003, store=None)
    assert (flagged.port, flagged.host, flagged.store) == (7003, "127.0.0.3", "s3://t/r")
    assert settings_here({}, port=None).port == 7001 and settings_here({}).host == "127.0.0.2"


def test_a_busy_port_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    first = tmp_path / "first.json"
    proc = runtime(tmp_path, str(FNS / "double"), "--port", "0", "--address-file", str(first))
    try:
        url = until(lambda: read_address_file(first, proc.pid), "the first replica", 30)
        port = url.rsplit(":", 1)[1]
        second = runtime(tmp_path, str(FNS / "double"), "--port", port)
        _, stderr = second.communicate(timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert second.returncode == 1 and stderr.strip().startswith(f"{PROG}: error: cannot listen on"), stderr

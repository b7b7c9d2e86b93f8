"""Storage down at start: the process is live, not ready, and gets ready by itself when S3 returns."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import fsspec
from moto.server import ThreadedMotoServer
from starlette.testclient import TestClient

from fnserve.runtime.app import create_app
from fnserve.runtime.loader import discover
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import CheckpointStore

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_storage_down_at_start_then_back(tmp_path: Path, s3_env: None) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    options = {
        "client_kwargs": {"endpoint_url": endpoint},
        "key": "testing",
        "secret": "testing",
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
    }
    settings = Settings.from_mapping(
        tmp_path,
        {"store": {"options": options}},
        {},
        {"store": "s3://models/store", "cache": str(tmp_path / "cache")},
    )
    runtime = Runtime(discover([FNS / "weighted"]), settings)
    with TestClient(create_app(runtime)) as client:
        time.sleep(1.0)  # a few failed load attempts against the dead endpoint
        assert client.get("/healthz").status_code == 200
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.headers["retry-after"]
        waiting = client.get("/function/weighted", params={"x": 1})
        assert waiting.status_code == 503 and "not ready" in waiting.json()["error"]
        assert endpoint not in waiting.text  # no storage details leak to callers

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            fsspec.filesystem("s3", **options).mkdir("models")
            weights = tmp_path / "v1"
            weights.mkdir()
            (weights / "weight.txt").write_text("3")
            CheckpointStore("s3://models/store", storage_options=options, cache_dir=tmp_path / "c2").publish(
                "weighted", weights
            )
            assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout_s=40)
            answer = client.get("/function/weighted", params={"x": 2})
            assert answer.json() == {"predictions": [6.0]}
            assert answer.headers["x-model-version"] == "1"
        finally:
            server.stop()

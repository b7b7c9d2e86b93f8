"""`fn train NAME --data <capture folder>`: captured traffic becomes training data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from starlette.testclient import TestClient

from fnserve.runtime.app import create_app
from fnserve.runtime.loader import discover
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import CheckpointStore

FNS = Path(__file__).parent.parent / "support" / "fns"


def test_train_reads_a_capture_folder(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    folder = project / "functions" / "captured"
    shutil.copytree(FNS / "captured", folder)
    (folder / "function.toml").write_text("[monitor]\ncapture_rate = 1.0\n")
    store = project / ".fnserve" / "store"  # fn train's default store
    runtime = Runtime(discover([folder]), Settings.from_mapping(project, {}, {}, {}))
    with TestClient(create_app(runtime)) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.01)
        instances = [{"price": float(i), "country": "nl"} for i in range(1, 11)]
        assert client.post("/function/captured", json={"instances": instances}).status_code == 200
    # stopped: what was queued is written. Another function's traffic in the same root is left out.
    capture = store / "_capture"
    other = capture / "function=other" / "version=0" / "date=2026-01-01"
    other.mkdir(parents=True)
    pq.write_table(
        pa.table({"price": [100.0], "country": ["x"], "score": [1e6], "loud": ["X"]}), other / "a.parquet"
    )

    env = {**os.environ, "COLUMNS": "200"}
    trained = subprocess.run(
        [sys.executable, "-m", "fnserve.cli", "train", "captured", "--data", capture.as_uri()],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trained.returncode == 0, trained.stderr
    assert "published captured version 1" in trained.stdout + trained.stderr
    checkpoint = CheckpointStore(store.as_uri(), cache_dir=tmp_path / "cache").fetch("captured", 1)
    metrics = checkpoint.manifest.metadata["metrics"]
    assert metrics == {"rows": 10, "mean_score": 11.0}  # scores 2..20: twice the prices 1..10

"""`fn train NAME --data postgresql://...`: a real PostgreSQL server's table as training data, the
password from the environment or the URL and in no output, manifest or error."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from fnserve.runtime.redact import redact_url
from fnserve.runtime.store import CheckpointStore
from tests.support.postgres import Scratch

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
CAPTURED = ROOT / "tests" / "support" / "fns" / "captured"  # its train.py: ctx.read_table([...])
TRAFFIC = pa.table(
    {
        "price": [1.0, 2.0, 3.0],
        "country": ["nl", "de", "fr"],
        "score": [2.0, 4.0, 6.0],
        "loud": ["NL", "DE", "FR"],
    }
)


def project_with(tmp_path: Path, name: str, source: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(source, project / "functions" / name, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def fn_train(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`fn train ARGS` as a user runs it, in ``project``, with no database variables but ``env``'s."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL"))}
    return subprocess.run(
        [sys.executable, "-m", "fnserve.cli", "train", *args],
        cwd=project,
        env={**base, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def store(project: Path, tmp_path: Path) -> CheckpointStore:
    return CheckpointStore((project / ".fnserve" / "store").as_uri(), cache_dir=tmp_path / "cache")


def test_fn_train_reads_a_table_with_the_password_from_the_environment(
    postgres: Scratch, tmp_path: Path
) -> None:
    postgres.create("traffic", TRAFFIC)
    project = project_with(tmp_path, "captured", CAPTURED)
    url = postgres.source(table="traffic", password="")  # user in the URL, password in PGPASSWORD
    trained = fn_train(project, "captured", "--data", url, env={"PGPASSWORD": postgres.password})
    output = trained.stdout + trained.stderr
    assert trained.returncode == 0, output
    assert "published captured version 1" in output and postgres.password not in output
    manifest = store(project, tmp_path).manifest("captured", 1)
    assert manifest.metadata["metrics"] == {"rows": 3, "mean_score": 4.0}
    assert manifest.metadata["data"] == redact_url(url)


def test_a_refused_password_stops_fn_train_before_training(postgres: Scratch, tmp_path: Path) -> None:
    postgres.create("traffic", TRAFFIC)
    project = project_with(tmp_path, "captured", CAPTURED)
    wrong = "Wrong-passw0rd-in-url"
    trained = fn_train(project, "captured", "--data", postgres.source(table="traffic", password=wrong))
    output = trained.stdout + trained.stderr
    assert trained.returncode == 1
    assert "cannot train 'captured': postgresql://***@127.0.0.1:" in output
    assert "password authentication failed" in output and "Traceback" not in output
    assert wrong not in output and postgres.password not in output
    assert store(project, tmp_path).versions("captured") == []


def test_an_unknown_table_stops_fn_train_naming_it(postgres: Scratch, tmp_path: Path) -> None:
    project = project_with(tmp_path, "captured", CAPTURED)
    trained = fn_train(project, "captured", "--data", postgres.source(table="missing"))
    output = trained.stdout + trained.stderr
    assert trained.returncode == 1 and "Traceback" not in output
    assert f'no table "{postgres.schema}"."missing"' in output and postgres.password not in output
    assert store(project, tmp_path).versions("captured") == []


@pytest.mark.slow
def test_fn_train_recs_on_a_postgresql_table_publishes_a_version(postgres: Scratch, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("recs_train_for_postgres", ROOT / "functions/recs/train.py")
    assert spec is not None and spec.loader is not None
    recs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recs)
    data = recs.generate_bookings(2_000, seed=5)
    postgres.create("bookings", pa.table({name: data[name] for name in (*recs.COLUMNS, "booked")}))
    project = project_with(tmp_path, "recs", ROOT / "functions" / "recs")
    url = postgres.source(table="bookings")  # the password in the URL: it must not reach the manifest
    trained = fn_train(project, "recs", "--data", url)
    output = trained.stdout + trained.stderr
    assert trained.returncode == 0, output[-3000:]
    assert "published recs version 1" in output and postgres.password not in output
    manifest = store(project, tmp_path).manifest("recs", 1)
    assert manifest.metadata["data"] == f"postgresql://***@{url.split('@', 1)[1]}"
    assert 0 <= manifest.metadata["metrics"]["accuracy"] <= 1
    published = project / ".fnserve" / "store" / "recs" / "1"
    assert not any(postgres.password in path.read_text(errors="replace") for path in published.glob("*.json"))

"""`fn train NAME --in-container --data postgresql://...`: the training container reads a real
PostgreSQL server on this machine's loopback (the host's network), its password handed over from
this environment at run time and shown nowhere."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from fnserve.cli.main import cli
from fnserve.docker_engine import DockerEngine
from fnserve.runtime.redact import redact_url
from fnserve.runtime.store import CheckpointStore
from tests.support.postgres import Scratch

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


def test_a_training_container_reads_postgresql_with_the_password_from_the_environment(
    docker_engine: DockerEngine, postgres: Scratch, tmp_path: Path
) -> None:
    postgres.create(
        "traffic",
        pa.table({"price": [1.0, 5.0], "country": ["nl", "de"], "score": [2.0, 10.0], "loud": ["NL", "DE"]}),
    )
    folder = tmp_path / "functions" / "captured"
    shutil.copytree(FNS / "captured", folder)
    (folder / "function.toml").write_text('[build]\ntemplate = "python"\n')
    url = postgres.source(table="traffic", password="")
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(
            cli,
            ["train", "captured", "--in-container", "--data", url],
            env={"COLUMNS": "200", "PGPASSWORD": postgres.password},
            catch_exceptions=False,
        )
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    assert "published version 1" in result.output and postgres.password not in result.output
    manifest = CheckpointStore((tmp_path / ".fnserve" / "store").as_uri(), cache_dir=tmp_path / "c").manifest(
        "captured", 1
    )
    assert manifest.metadata["metrics"] == {"rows": 2, "mean_score": 6.0}
    assert manifest.metadata["data"] == redact_url(url)
    assert docker_engine.containers("io.fnserve.function=captured") == []

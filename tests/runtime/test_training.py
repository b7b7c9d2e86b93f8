"""TrainContext: settings from an explicit environment, checkpoints published with their metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fnserve.runtime.training import TrainContext


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "fn.toml").write_text('[store]\nroot = "file://store"\ncache = "cache"\n')
    return folder


def test_from_env_reads_function_data_and_the_projects_store(project: Path) -> None:
    environ = {
        "FNSERVE_PROJECT": str(project),
        "FNSERVE_FUNCTION": "tagger",
        "FNSERVE_DATA": "s3://data/train.parquet",
    }
    ctx = TrainContext.from_env(environ, default_function="recs")
    assert ctx.function == "tagger" and ctx.data == "s3://data/train.parquet"
    assert ctx.store.root == (project / "store").as_uri()
    assert ctx.store.cache_dir == project / "cache"


def test_from_env_falls_back_to_the_default_function_and_environment_store(project: Path) -> None:
    environ = {"FNSERVE_PROJECT": str(project), "FNSERVE_STORE": "memory://fnserve-training-env"}
    ctx = TrainContext.from_env(environ, default_function="recs")
    assert ctx.function == "recs" and ctx.data is None
    assert ctx.store.location("recs") == "memory://fnserve-training-env/recs"


@pytest.mark.parametrize("environ", [{}, {"FNSERVE_FUNCTION": "Not A Name"}])
def test_from_env_needs_a_valid_function_name(project: Path, environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"FNSERVE_FUNCTION|not a valid name"):
        TrainContext.from_env({"FNSERVE_PROJECT": str(project), **environ})


def test_publish_records_metrics_in_the_manifest(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = TrainContext.from_env(
        {"FNSERVE_PROJECT": str(project), "FNSERVE_DATA": "file:///data"}, default_function="recs"
    )
    model = project / "out"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"graph")

    metrics = {"accuracy": np.float32(0.75), "chance": 0.5, "auc": float("nan"), "epochs": np.int64(3)}
    assert ctx.publish(model, metrics=metrics) == 1
    assert ctx.publish(str(model), metrics={"accuracy": 0.8}) == 2

    manifest = ctx.store.manifest("recs", 1)
    assert manifest.metadata["metrics"] == {"accuracy": 0.75, "chance": 0.5, "auc": None, "epochs": 3}
    assert manifest.metadata["data"] == "file:///data"
    assert capsys.readouterr().out.splitlines() == [
        f"published recs version 1 to {(project / 'store').as_uri()}/recs/1",
        f"published recs version 2 to {(project / 'store').as_uri()}/recs/2",
    ]

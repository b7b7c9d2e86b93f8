"""Warm-up before ready: a version's representative rows run through the function before it is
served (at batch 1 and a full batch), and a version whose rows the function rejects never serves."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from fnserve.runtime import evaluation
from fnserve.runtime.errors import FunctionError
from fnserve.runtime.function import WARM_UP_ROWS, ServedFunction
from fnserve.runtime.loader import discover
from fnserve.runtime.store import CheckpointStore

PREDICT = """
import os
from pathlib import Path

import numpy as np

from fnserve import predict


def load(checkpoint_dir: str) -> float:
    return float((Path(checkpoint_dir) / "weight.txt").read_text())


@predict(loader=load, max_batch_size=512)
def scaled(model: float, x: float) -> float:
    with open(os.environ["WARM_UP_LOG"], "a") as log:
        log.write(f"{len(x)}\\n")
    if np.any(x < 0):
        raise ValueError("negative inputs are not for this model")
    return x * model
"""


@pytest.fixture
def function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ServedFunction, CheckpointStore, Path]:
    folder = tmp_path / "scaled"
    folder.mkdir()
    (folder / "predict.py").write_text(PREDICT)
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("WARM_UP_LOG", str(calls))
    store = CheckpointStore(f"file://{tmp_path}/store", cache_dir=tmp_path / "cache")
    [found] = discover([folder])
    return ServedFunction(found, store), store, calls


def publish(store: CheckpointStore, tmp_path: Path, rows: np.ndarray | None) -> int:
    folder = tmp_path / f"v-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "weight.txt").write_text("2")
    if rows is not None:
        evaluation.write(folder, None, {"x": rows})
    return store.publish("scaled", folder)


def test_representative_rows_run_at_batch_1_and_a_full_batch_before_the_version_serves(
    function: tuple[ServedFunction, CheckpointStore, Path], tmp_path: Path
) -> None:
    fn, store, calls = function
    publish(store, tmp_path, np.linspace(0, 1, 300))
    loaded = fn.load()
    assert [int(n) for n in calls.read_text().split()] == [1, WARM_UP_ROWS]  # before anyone asked
    assert loaded.warm_up_s > 0 and fn.describe()["warm_up_s"] == round(loaded.warm_up_s, 4)
    assert fn.describe()["model_load_s"] <= loaded.load_s - loaded.warm_up_s + 1e-3


def test_a_version_without_rows_is_served_without_a_warm_up(
    function: tuple[ServedFunction, CheckpointStore, Path], tmp_path: Path
) -> None:
    fn, store, calls = function
    publish(store, tmp_path, None)
    assert fn.load().warm_up_s == 0.0 and not calls.exists()


def test_a_version_whose_rows_the_function_rejects_never_serves(
    function: tuple[ServedFunction, CheckpointStore, Path], tmp_path: Path
) -> None:
    fn, store, _ = function
    good = publish(store, tmp_path, np.linspace(0, 1, 10))
    assert fn.load().version == good
    bad = publish(store, tmp_path, np.array([1.0, -1.0, 2.0]))  # the function raises on these
    assert fn.load().version == good  # still the good one: the new one was passed over
    [skipped] = fn.describe()["skipped_versions"]
    assert skipped["version"] == bad and skipped["reason"] == "loader"
    assert "warm-up of 'scaled' on the warm-up rows of version" in skipped["error"]
    assert "ValueError: negative inputs are not for this model" in skipped["error"]
    alone = ServedFunction(discover([tmp_path / "scaled"])[0], store, str(bad))  # pinned: no other
    with pytest.raises(FunctionError) as failed:
        alone.load()
    assert "warm-up of 'scaled'" in failed.value.message

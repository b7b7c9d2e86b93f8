"""Evaluation data and the representative sample: written by TrainContext.publish under the
manifest, read back in the columns form a vectorized function receives, bad data named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fnserve import Evaluation
from fnserve.runtime import evaluation
from fnserve.runtime.evaluation import EVALUATION_FILE, REPRESENTATIVE_FILE, EvaluationDataError
from fnserve.runtime.loader import discover
from fnserve.runtime.store import CheckpointStore
from fnserve.runtime.training import TrainContext

FNS = Path(__file__).parents[1] / "support" / "fns"


def _context(tmp_path: Path) -> TrainContext:
    store = CheckpointStore(f"file://{tmp_path}/store", cache_dir=tmp_path / "cache")
    return TrainContext(function="tagged", store=store, data=None)


def test_publish_writes_both_files_under_the_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"weights")
    photos = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    held = Evaluation(
        inputs={"photo": photos, "caption": ["a", "b", "c", "d", "e"]},
        labels={"pool": np.array([1, 0, 1, 0, 0]), "bed": np.array([0, 0, 1, 1, 0])},
        metrics=("mean_average_precision", "f1_at_0.5"),
    )
    ctx = _context(tmp_path)
    version = ctx.publish(folder, evaluation=held, representative={"photo": np.repeat(photos, 300, axis=0)})
    checkpoint = ctx.store.fetch("tagged", version)
    assert {EVALUATION_FILE, REPRESENTATIVE_FILE} <= set(checkpoint.manifest.files)

    data = evaluation.read(checkpoint.path)
    assert data is not None and data.metrics == ("mean_average_precision", "f1_at_0.5")
    assert data.inputs["photo"].dtype == np.uint8 and data.inputs["photo"].shape == (5, 8, 8, 3)
    np.testing.assert_array_equal(data.inputs["photo"], photos)
    assert data.inputs["caption"].dtype == object and list(data.labels) == ["pool", "bed"]
    np.testing.assert_array_equal(data.labels["bed"], [0, 0, 1, 1, 0])
    sample = evaluation.read_representative(checkpoint.path)
    assert sample is not None and sample["photo"].shape == (1000, 8, 8, 3)  # 1500 rows, sampled to 1000


def test_columns_come_back_as_the_codec_hands_them_to_the_function(tmp_path: Path) -> None:
    found = next(f for f in discover([FNS / "kinds"]) if f.spec.name == "kinds")
    assert evaluation.read(tmp_path) is None  # a folder without the file has no evaluation data
    inputs = {
        "count": [3, 4],
        "ratio": [0.5, 1.5],
        "flag": [True, False],
        "season": ["winter", "summer"],
        "vector": np.ones((2, 3)),  # float64 here: the function takes float32
        "photo": np.full((2, 4, 4, 3), 9, dtype=np.uint8),
    }
    evaluation.write(tmp_path, Evaluation(inputs, [0, 1], ("roc_auc",)))
    data = evaluation.read(tmp_path)
    assert data is not None
    columns = evaluation.served_columns(found.schema, data.inputs, "evaluation data")
    dtypes = {name: (str(column.dtype), column.shape) for name, column in columns.items()}
    assert dtypes == {
        "count": ("int64", (2,)),
        "ratio": ("float64", (2,)),
        "flag": ("bool", (2,)),
        "season": ("object", (2,)),
        "vector": ("float32", (2, 3)),
        "photo": ("uint8", (2, 4, 4, 3)),
        "note": ("object", (2,)),  # not given: its default, as a request without it gets
        "ratio_or_nan": ("float64", (2,)),
    }
    answer = found.func(**columns)
    assert list(answer["photo_mean"]) == [9.0, 9.0] and list(answer["note_len"]) == [4.0, 4.0]

    with pytest.raises(EvaluationDataError, match=r"evaluation data: count\[1\]: must be <= 100, got 400"):
        evaluation.served_columns(
            found.schema, {**data.inputs, "count": np.array([3, 400])}, "evaluation data"
        )
    with pytest.raises(EvaluationDataError, match=r"no input named 'colour'; input 'photo' missing"):
        bad = {**{k: v for k, v in data.inputs.items() if k != "photo"}, "colour": data.inputs["season"]}
        evaluation.served_columns(found.schema, bad, "evaluation data")


def test_bad_evaluation_data_is_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(EvaluationDataError, match=r"columns of different lengths \(x: 3, label: 2\)"):
        evaluation.write(tmp_path, Evaluation({"x": [1.0, 2.0, 3.0]}, [0, 1], ("roc_auc",)))
    with pytest.raises(EvaluationDataError, match=r"unknown metric 'accuracy'; choose from roc_auc"):
        evaluation.write(tmp_path, Evaluation({"x": [1.0]}, [0], ("accuracy",)))
    with pytest.raises(EvaluationDataError, match=r"an input is named 'label'"):
        evaluation.write(tmp_path, Evaluation({"label": [1.0]}, [0], ("roc_auc",)))
    assert not (tmp_path / EVALUATION_FILE).exists()  # nothing half-written


def test_labels_that_do_not_match_the_functions_outputs_are_named() -> None:
    from fnserve.optimize.pipeline import _targets
    from fnserve.runtime.outputs import Outputs

    named = Outputs.of({"pool": np.array([0.9, 0.1]), "bed": np.array([0.2, 0.8])}, 2, "tagger")
    labels, scores, names = _targets(named, {"bed": np.array([0, 1]), "pool": np.array([1, 0])})
    assert names == ["bed", "pool"] and scores.tolist() == [[0.2, 0.9], [0.8, 0.1]]
    assert labels.tolist() == [[0, 1], [1, 0]]
    with pytest.raises(
        EvaluationDataError, match=r"labels for 'sea_view', which the function does not return"
    ):
        _targets(named, {"sea_view": np.array([0, 1])})
    with pytest.raises(EvaluationDataError, match=r"labels are one column but the function returns named"):
        _targets(named, {None: np.array([0, 1])})
    single = Outputs.of(np.array([0.3, 0.6]), 2, "recs")
    with pytest.raises(
        EvaluationDataError, match=r"labels by output key \(pool\) but the function returns one"
    ):
        _targets(single, {"pool": np.array([0, 1])})

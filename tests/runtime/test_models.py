"""fnserve.load_model: a SavedModel, a LiteRT flatbuffer and a frozen graph called the same way.

One tiny Keras model (tests/support/tiny_models.py) exported once per module and converted to
each format; every format must give the SavedModel's answers, at any batch size, from threads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fnserve import load_model
from fnserve.optimize.convert import make_variant
from fnserve.runtime.errors import CheckpointCorrupt, CheckpointError, FnError
from fnserve.runtime.models import Model, ModelCallError, TensorInfo, recording
from tests.support.tiny_models import FEATURES, convert_float32, export_scorer, scorer_inputs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    saved = export_scorer(root / "savedmodel")
    frozen = root / "frozen"
    make_variant(saved, frozen, "freeze")
    return {"savedmodel": saved, "litert": convert_float32(saved, root / "litert"), "frozen": frozen}


@pytest.fixture(scope="module")
def expected(folders: dict[str, Path]) -> dict[str, np.ndarray]:
    return load_model(folders["savedmodel"])(**scorer_inputs(64))


@pytest.mark.parametrize("kind", ["savedmodel", "litert", "frozen"])
def test_each_format_loads_and_answers_like_the_savedmodel(
    kind: str, folders: dict[str, Path], expected: dict[str, np.ndarray]
) -> None:
    model = load_model(folders[kind])
    assert model.format == kind
    assert model.inputs == {
        "kind": TensorInfo(np.dtype(np.int32), (None,)),
        "x": TensorInfo(np.dtype(np.float32), (None, FEATURES)),
    }
    assert model.outputs["score"].shape == (None,) and model.outputs["logits"].shape == (None, 3)
    got = model(**scorer_inputs(64))
    assert set(got) == {"score", "logits"}
    for name, value in got.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32
        np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["savedmodel", "litert", "frozen"])
def test_batch_sizes_change_between_calls(
    kind: str, folders: dict[str, Path], expected: dict[str, np.ndarray]
) -> None:
    model = load_model(folders[kind])
    inputs = scorer_inputs(64)
    for rows in (1, 5, 64, 1, 17, 5):  # grow, shrink, repeat: each shape change re-plans LiteRT
        got = model(**{name: value[:rows] for name, value in inputs.items()})
        assert got["logits"].shape == (rows, 3)
        np.testing.assert_allclose(got["score"], expected["score"][:rows], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["savedmodel", "litert", "frozen"])
def test_calls_from_many_threads_get_their_own_answers(
    kind: str, folders: dict[str, Path], expected: dict[str, np.ndarray]
) -> None:
    model = load_model(folders[kind])
    inputs = scorer_inputs(64)

    def call(start: int) -> tuple[int, np.ndarray]:
        rows = 1 + start % 13  # every thread a different batch size: shapes change under contention
        return start, model(**{name: value[start : start + rows] for name, value in inputs.items()})["score"]

    with ThreadPoolExecutor(8) as pool:
        for start, score in pool.map(call, [i % 50 for i in range(200)]):
            np.testing.assert_allclose(
                score, expected["score"][start : start + len(score)], rtol=1e-4, atol=1e-5
            )


def test_inputs_are_cast_to_the_model_dtypes(
    folders: dict[str, Path], expected: dict[str, np.ndarray]
) -> None:
    model = load_model(folders["litert"])
    inputs = scorer_inputs(64)
    got = model(
        kind=inputs["kind"].astype(np.int64), x=inputs["x"].astype(np.float64)
    )  # what the runtime passes
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["savedmodel", "litert", "frozen"])
def test_a_wrong_call_names_the_inputs(kind: str, folders: dict[str, Path]) -> None:
    model = load_model(folders[kind])
    inputs = scorer_inputs(3)
    with pytest.raises(ModelCallError, match=r"missing input.* x") as missing:
        model(kind=inputs["kind"])
    assert isinstance(missing.value, FnError)
    with pytest.raises(ModelCallError, match=r"unknown input.* colour \(it takes kind, x\)"):
        model(**inputs, colour=inputs["kind"])
    with pytest.raises(ModelCallError, match="input kind is <U1, the model takes int32"):
        model(kind=np.array(["a", "b", "c"]), x=inputs["x"])
    with pytest.raises(ModelCallError, match=r"input x has shape \(3, 2\), the model takes \('\?', 8\)"):
        model(kind=inputs["kind"], x=inputs["x"][:, :2])


def test_a_folder_without_a_model_is_refused_saying_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(CheckpointError, match=r"holds no model.*found: weights\.bin"):
        load_model(tmp_path)


def test_a_corrupt_flatbuffer_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.tflite").write_bytes(b"not a flatbuffer" * 10)
    (tmp_path / "fnserve-model.json").write_text(json.dumps({"format": "litert", "path": "model.tflite"}))
    with pytest.raises(CheckpointCorrupt, match=r"model\.tflite: not a loadable LiteRT flatbuffer"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("descriptor", "error"),
    [
        ({"format": "onnx"}, "'format' must be one of savedmodel, litert, frozen"),
        (
            {"format": "litert", "path": "../elsewhere.tflite"},
            "model file '../elsewhere.tflite' is not in the folder",
        ),
        ({"format": "frozen", "path": "missing.pb"}, "model file 'missing.pb' is not in the folder"),
    ],
)
def test_a_bad_descriptor_is_refused(tmp_path: Path, descriptor: dict[str, str], error: str) -> None:
    (tmp_path / "fnserve-model.json").write_text(json.dumps(descriptor))
    with pytest.raises(CheckpointError, match=error.replace("(", r"\(").replace(")", r"\)")):
        load_model(tmp_path)


def test_a_flatbuffer_loads_without_tensorflow(folders: dict[str, Path]) -> None:
    """What lets a LiteRT version's image leave TensorFlow out."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import fnserve
        model = fnserve.load_model({str(folders["litert"])!r})
        out = model(kind=np.zeros(2, np.int32), x=np.zeros((2, {FEATURES}), np.float32))
        assert out["logits"].shape == (2, 3), out
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras"))
        print("loaded:", loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout


def test_recording_lists_the_inputs_of_models_loaded_inside_it(folders: dict[str, Path]) -> None:
    before = load_model(folders["litert"])
    with recording() as calls:
        inside: Model = load_model(folders["litert"])
        inputs = scorer_inputs(4)
        inside(**inputs)
        inside(kind=inputs["kind"][:1].astype(np.int64), x=inputs["x"][:1])
        before(**inputs)  # loaded before the block: not recorded
    inside(**inputs)  # after the block: not recorded either
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[0]["x"], inputs["x"])
    assert calls[1]["kind"].dtype == np.int32 and calls[1]["kind"].shape == (1,)  # as the model took it

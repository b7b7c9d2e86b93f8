"""make_variant: each technique on a tiny model; failures write nothing and say why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fnserve import load_model
from fnserve.optimize import OptimizeError
from fnserve.optimize.convert import TECHNIQUES, make_variant
from fnserve.runtime.manifest import MANIFEST_NAME
from tests.support.tiny_models import (
    convert_float32,
    export_scorer,
    export_string_lookup,
    export_without_signature,
    scorer_inputs,
)

# Mean absolute difference from the base's answers, as a share of the answers' range.
TOLERANCE = {"quantize-int8": 0.05, "quantize-dynamic": 0.03, "quantize-float16": 0.005, "freeze": 1e-6}
EXPECTED_FORMAT = {
    "quantize-int8": "litert",
    "quantize-dynamic": "litert",
    "quantize-float16": "litert",
    "freeze": "frozen",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published-looking version folder: the SavedModel plus the files a variant keeps."""
    folder = export_scorer(tmp_path_factory.mktemp("base") / "1")
    (folder / "vocabularies.json").write_text('{"kind": [0, 1, 2, 3, 4]}\n')
    (folder / "fnserve-reference.json").write_text("{}\n")
    (folder / MANIFEST_NAME).write_text("{}\n")  # the store's: never copied into a variant
    return folder


@pytest.fixture(scope="module")
def representative() -> list[dict[str, np.ndarray]]:
    return [scorer_inputs(200, seed=2), scorer_inputs(100, seed=3)]


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_each_technique_makes_a_variant_that_answers_like_its_base(
    technique: str, base: Path, representative: list[dict[str, np.ndarray]], tmp_path: Path
) -> None:
    out = tmp_path / "variant"
    settings = make_variant(base, out, technique, representative=representative)
    names = {path.name for path in out.iterdir()}
    assert {"vocabularies.json", "fnserve-reference.json", "fnserve-model.json"} <= names
    assert MANIFEST_NAME not in names and "saved_model.pb" not in names and "variables" not in names
    json.dumps(settings)  # lineage settings go into the manifest: plain JSON
    variant = load_model(out)
    assert variant.format == EXPECTED_FORMAT[technique]
    inputs = scorer_inputs(64, seed=9)
    want, got = load_model(base)(**inputs), variant(**inputs)
    for name in ("score", "logits"):
        spread = float(want[name].max() - want[name].min())
        assert float(np.abs(got[name] - want[name]).mean()) <= TOLERANCE[technique] * spread, name


def test_full_int8_quantizes_every_op_and_keeps_float_io(
    base: Path, representative: list[dict[str, np.ndarray]], tmp_path: Path
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    settings = make_variant(base, tmp_path / "int8", "quantize-int8", representative=representative)
    assert (
        settings["calibration_rows"] == 300 and settings["quantizer"] == "mlir" and settings["io"] == "float"
    )
    interpreter = Interpreter(model_path=str(tmp_path / "int8" / "model.tflite"))
    kinds = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.int8 in kinds  # weights and activations
    runner = interpreter.get_signature_runner("serving_default")
    assert runner.get_input_details()["x"]["dtype"] == np.float32
    assert all(detail["dtype"] == np.float32 for detail in runner.get_output_details().values())


def test_float16_halves_the_model_and_dynamic_shrinks_it_more(base: Path, tmp_path: Path) -> None:
    float32 = (convert_float32(base, tmp_path / "f32") / "model.tflite").stat().st_size
    make_variant(base, tmp_path / "f16", "quantize-float16")
    make_variant(base, tmp_path / "dyn", "quantize-dynamic")
    assert (tmp_path / "f16" / "model.tflite").stat().st_size <= 0.55 * float32
    assert (tmp_path / "dyn" / "model.tflite").stat().st_size <= 0.35 * float32


def test_freeze_records_whether_xla_was_kept_and_why(base: Path, tmp_path: Path) -> None:
    settings = make_variant(base, tmp_path / "frozen", "freeze")
    descriptor = json.loads((tmp_path / "frozen" / "fnserve-model.json").read_text())
    assert descriptor["jit_compile"] is settings["jit_compile"]
    without, with_xla = settings["jit_measured_s"]["without"], settings["jit_measured_s"]["with"]
    assert len(without) == 2 and all(t > 0 for t in without)
    assert settings["jit_compile"] == (
        with_xla is not None and all(w < p for w, p in zip(with_xla, without, strict=True))
    )
    assert "constfold" in settings["grappler"]


def test_int8_needs_representative_data(base: Path, tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match="quantize-int8 needs representative inputs"):
        make_variant(base, tmp_path / "out", "quantize-int8")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("sample", "named"),
    [
        ({"kind": np.zeros(3, np.int32)}, "missing x"),
        ({**scorer_inputs(3), "colour": np.zeros(3)}, r"unknown colour \(the model takes kind, x\)"),
        (
            {"kind": np.array(["a", "b", "c"]), "x": np.zeros((3, 8))},
            r"kind is <U1\[3\], the model takes int32\['\?'\]",
        ),
        ({"kind": np.zeros(3, np.int32), "x": np.zeros((2, 8))}, r"different row counts \[2, 3\]"),
    ],
)
def test_representative_data_that_does_not_fit_is_named(
    base: Path, tmp_path: Path, sample: dict[str, np.ndarray], named: str
) -> None:
    with pytest.raises(
        OptimizeError, match=f"representative data does not match the model: sample 0: .*{named}"
    ):
        make_variant(base, tmp_path / "out", "quantize-int8", representative=[sample])
    assert not (tmp_path / "out").exists()


def test_a_model_without_a_serving_signature_is_refused(tmp_path: Path) -> None:
    base = export_without_signature(tmp_path / "base")
    for technique in TECHNIQUES:
        with pytest.raises(OptimizeError, match="no 'serving_default' signature"):
            make_variant(base, tmp_path / "out", technique, representative=[{"x": np.zeros(2, np.float32)}])
    assert not (tmp_path / "out").exists()


def test_an_op_the_converter_cannot_quantize_is_named(tmp_path: Path) -> None:
    """A hash-table string lookup (what recs had inside its graph before it moved to predict.py)."""
    base = export_string_lookup(tmp_path / "base")
    words = [{"word": np.array(["a", "b", "zz"], dtype=object)}]
    for technique in ("quantize-int8", "quantize-dynamic"):
        with pytest.raises(
            OptimizeError, match=rf"{technique} cannot convert this model: unsupported op\(s\) tf.HashTableV2"
        ):
            make_variant(base, tmp_path / "out", technique, representative=words)
    with pytest.raises(OptimizeError, match=r"freeze cannot fold lookup tables \(LookupTableFindV2\)"):
        make_variant(base, tmp_path / "out", "freeze")
    assert not (tmp_path / "out").exists()


def test_an_unknown_technique_or_a_variant_as_base_is_refused(base: Path, tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match="unknown technique 'prune'"):
        make_variant(base, tmp_path / "out", "prune")
    make_variant(base, tmp_path / "dyn", "quantize-dynamic")
    with pytest.raises(OptimizeError, match="already a variant"):
        make_variant(tmp_path / "dyn", tmp_path / "out", "quantize-float16")
    assert not (tmp_path / "out").exists()

"""`fn optimize` end to end on a tiny real model in a real file:// store: measured, gated, published."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fnserve.optimize import OptimizeError
from fnserve.optimize.pipeline import Refused, optimize
from fnserve.optimize.speed import SpeedPlan
from fnserve.runtime.errors import FnError
from fnserve.runtime.evaluation import EVALUATION_FILE, REPRESENTATIVE_FILE
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.loader import discover
from fnserve.runtime.settings import Settings
from tests.support import optimizing

FAST = SpeedPlan(rounds=2, calls=5, warmup=1)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    shutil.copytree(optimizing.FOLDER, tmp_path / "functions" / "optimizable")
    return Settings.load(
        tmp_path, {"FNSERVE_STORE": f"file://{tmp_path}/store"}, {"cache_dir": tmp_path / "cache"}
    )


def _publish(settings: Settings, **kwargs: object) -> None:
    optimizing.publish(settings.store, settings.cache_dir, settings.project_dir, **kwargs)  # type: ignore[arg-type]


def test_a_variant_is_measured_beside_its_base_and_published_with_its_lineage(project: Settings) -> None:
    _publish(project)
    result = optimize(project, "optimizable", "quantize-float16", max_drop=1.0, speed=FAST)
    assert result.published_version == 2 and result.gate == "roc_auc"
    assert 0.6 < result.base.metrics["roc_auc"] < 0.95 and "log_loss" in result.base.metrics
    assert result.drop_points is not None and result.drop_points <= 1.0
    assert result.base.p50_batch1_ms > 0 and result.variant.preds_per_s > 0
    assert result.base.max_batch_size == 32 and result.base.size_bytes > 0

    store = optimizing.CheckpointStore(project.store, cache_dir=project.cache_dir)
    manifest = store.manifest("optimizable", 2)
    assert manifest.metadata["lineage"] == {
        "base_version": 1,
        "technique": "quantize-float16",
        "settings": result.settings,
    }
    assert manifest.metadata["metrics"]["roc_auc"] == result.variant.metrics["roc_auc"]
    assert manifest.metadata["optimize"]["base"]["version"] == 1
    assert {EVALUATION_FILE, REPRESENTATIVE_FILE} <= set(manifest.files)  # a variant carries them on

    served = ServedFunction(discover([project.project_dir / "functions"])[0], store)
    served.load()
    described = served.describe()
    assert described["version"] == 2 and described["lineage"]["base_version"] == 1
    assert described["metrics"]["p50_batch1_ms"] == result.variant.p50_batch1_ms


def test_int8_calibrates_on_what_the_function_feeds_its_model(
    project: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(project)
    import fnserve.optimize.convert as convert

    seen: list[list[dict[str, object]]] = []
    real = convert.make_variant

    def spying(base_dir: Path, out_dir: Path, technique: str, *, representative: object = None) -> object:
        seen.append(list(representative))  # type: ignore[call-overload]
        return real(base_dir, out_dir, technique, representative=representative)  # type: ignore[arg-type]

    monkeypatch.setattr(convert, "make_variant", spying)
    optimize(project, "optimizable", "quantize-int8", speed=FAST)
    calls = seen[0]
    assert sum(len(call["x"]) for call in calls) == 300  # type: ignore[arg-type]
    assert set(calls[0]) == {"x", "b"} and str(calls[0]["b"].dtype) == "float32"  # type: ignore[attr-defined]


def test_a_variant_losing_accuracy_is_refused_and_nothing_is_published(
    project: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(project)
    import fnserve.optimize.convert as convert

    monkeypatch.setattr(convert, "make_variant", optimizing.damaging_converter)
    with pytest.raises(Refused) as refused:
        optimize(project, "optimizable", "quantize-int8", max_drop=1.0, speed=FAST)
    message = refused.value.message
    assert "roc_auc drops" in message and "base version 1" in message and "quantize-int8 variant" in message
    assert "more than the limit of 1 (--max-drop)" in message and "--force" in message
    assert refused.value.result.published_version is None
    store = optimizing.CheckpointStore(project.store, cache_dir=project.cache_dir)
    assert store.versions("optimizable") == [1]

    forced = optimize(project, "optimizable", "quantize-int8", force=True, speed=FAST)
    assert forced.published_version == 2 and any("published with --force" in n for n in forced.notes)
    assert forced.drop_points is not None and forced.drop_points > 1.0


def test_a_version_without_evaluation_data_is_refused_naming_the_fix(project: Settings) -> None:
    _publish(project, evaluation=False)
    with pytest.raises(OptimizeError, match=r"no evaluation data .*evaluation=Evaluation\(.*--force"):
        optimize(project, "optimizable", "freeze", speed=FAST)
    store = optimizing.CheckpointStore(project.store, cache_dir=project.cache_dir)
    assert store.versions("optimizable") == [1]

    forced = optimize(project, "optimizable", "freeze", force=True, speed=FAST)
    assert forced.published_version == 2 and forced.gate is None and forced.variant.metrics == {}
    assert forced.notes == ("accuracy not measured: version 1 has no evaluation data (--force)",)


def test_representative_data_that_does_not_match_the_inputs_is_named(project: Settings) -> None:
    _publish(project, representative={"x": [0.5, 0.7], "colour": ["red", "blue"]})
    with pytest.raises(
        FnError, match=r"representative data of version 1: .*no input named 'colour'.*'kind' missing"
    ):
        optimize(project, "optimizable", "quantize-int8", speed=FAST)
    store = optimizing.CheckpointStore(project.store, cache_dir=project.cache_dir)
    assert store.versions("optimizable") == [1]


def test_an_unknown_function_or_technique_is_refused(project: Settings) -> None:
    _publish(project)
    with pytest.raises(OptimizeError, match="no function named 'nope'; the project has optimizable"):
        optimize(project, "nope", "freeze")
    with pytest.raises(OptimizeError, match="unknown technique 'prune'"):
        optimize(project, "optimizable", "prune")


def test_latest_made_by_fn_optimize_means_its_base_and_a_named_variant_is_refused(project: Settings) -> None:
    _publish(project)
    said: list[str] = []
    optimize(project, "optimizable", "quantize-float16", speed=FAST)
    second = optimize(project, "optimizable", "quantize-dynamic", speed=FAST, progress=said.append)
    assert second.base.version == 1 and second.published_version == 3
    assert any("is a quantize-float16 variant of version 1: optimizing 1" in line for line in said)
    with pytest.raises(
        OptimizeError, match=r"version 2 is already a quantize-float16 variant .* \(--from 1\)"
    ):
        optimize(project, "optimizable", "freeze", from_version="2", speed=FAST)

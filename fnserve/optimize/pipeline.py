"""``fn optimize``: make a variant of a published version, measure it beside its base, publish it.

    result = optimize(settings, "recs", "quantize-int8")       # from the latest version
    result.published_version                                   # 5: lineage {"base_version": 4, ...}

The steps, and where each can stop (nothing is published unless every one succeeds):

1. the function (its ``predict.py``) and the base version are found and fetched;
2. its held-out evaluation data and representative sample are read (:mod:`fnserve.runtime.evaluation`);
   a version without evaluation data is refused unless ``force``;
3. for full-integer quantization, the function runs over the representative rows while
   :func:`fnserve.runtime.models.recording` notes what it feeds its model: the calibration data;
4. the converter writes the variant into a temporary folder (:mod:`fnserve.optimize.convert`);
5. base and variant are loaded by the function's own loader and called as the runtime calls them
   (``ServedFunction.call``, batches of ``max_batch_size``): the task's metrics on the held-out
   rows, then batch-1 latency and throughput at ``max_batch_size``, pinned and side by side
   (:mod:`fnserve.optimize.speed`);
6. a variant whose first metric drops by more than ``max_drop`` points is refused (unless
   ``force``); otherwise it is published with its metrics, lineage and the comparison.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fnserve.optimize import OptimizeError
from fnserve.optimize import metrics as task_metrics
from fnserve.optimize.speed import SpeedPlan, measure
from fnserve.project import FUNCTIONS_DIR
from fnserve.runtime import evaluation
from fnserve.runtime.evaluation import EvaluationData, EvaluationDataError
from fnserve.runtime.function import LoadedModel, ServedFunction
from fnserve.runtime.loader import FoundFunction, discover
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import CheckpointStore

MODEL_DESCRIPTOR = "fnserve-model.json"  # absent: the folder is a SavedModel


@dataclass(frozen=True)
class Row:
    """One line of the comparison table: a model and what was measured of it."""

    version: int | None  # None: the variant, before it is published
    format: str  # savedmodel, litert or frozen
    size_bytes: int  # the model's files (not fnserve's own data files beside them)
    metrics: dict[str, float]  # the task's metrics on the evaluation data; {} when not measured
    p50_batch1_ms: float
    preds_per_s: float  # at max_batch_size
    max_batch_size: int

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Result:
    name: str
    technique: str
    base: Row
    variant: Row
    settings: dict[str, Any]  # the converter's, as in the lineage
    gate: str | None  # the metric deciding, None when accuracy was not measured
    drop_points: float | None  # how much worse the variant is on it, in points (0.01)
    max_drop: float
    published_version: int | None = None
    notes: tuple[str, ...] = field(default=())  # what the table should say beside the numbers


class Refused(OptimizeError):
    """The variant was made and measured but not published; ``result`` holds the measurements."""

    def __init__(self, message: str, result: Result):
        super().__init__(message)
        self.result = result


def optimize(
    settings: Settings,
    name: str,
    technique: str,
    *,
    from_version: str | int = "latest",
    max_drop: float = 1.0,
    force: bool = False,
    targets: Iterable[str | Path] | None = None,
    speed: SpeedPlan | None = None,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Make, measure and (unless refused) publish a ``technique`` variant of ``name``'s version."""
    from fnserve.optimize.convert import TECHNIQUES, make_variant

    say = progress or (lambda _: None)
    if technique not in TECHNIQUES:
        raise OptimizeError(f"unknown technique {technique!r}; choose from {', '.join(TECHNIQUES)}")
    if not (isinstance(max_drop, (int, float)) and math.isfinite(max_drop) and max_drop >= 0):
        raise OptimizeError(f"--max-drop must be a number of points >= 0, got {max_drop!r}")
    found = _find(name, targets if targets is not None else [settings.project_dir / FUNCTIONS_DIR])
    checkpoint = found.spec.checkpoint
    if checkpoint is None:
        raise OptimizeError(
            f"function {name!r} has no checkpoint (no loader=): there is no model to optimize"
        )
    store = CheckpointStore(
        settings.store, storage_options=dict(settings.storage_options), cache_dir=settings.cache_dir
    )
    base_version = _base_version(store, checkpoint, from_version, say)
    say(f"{name}: fetching version {base_version}")
    base = ServedFunction(found, store, str(base_version), warm_up=False)
    loaded = base.load()
    assert loaded.path is not None
    base_dir = Path(loaded.path)
    data, samples, notes = _read_data(found, base_dir, base_version, force)
    representative = None
    if technique == "quantize-int8":
        if samples is None:
            raise OptimizeError(
                f"{name} version {base_version} has no representative data "
                f"({evaluation.REPRESENTATIVE_FILE}) to calibrate full-integer quantization: "
                "retrain publishing it with ctx.publish(..., representative={input: column}), or choose "
                "--quantize dynamic or float16"
            )
        say(
            f"{name}: recording the model's inputs on {len(next(iter(samples.values())))} representative rows"
        )
        representative = _model_inputs(found, store, base_version, samples)
    with tempfile.TemporaryDirectory(prefix="fnserve-optimize-") as temp:
        out_dir = Path(temp) / "variant"
        say(f"{name}: making the {technique} variant of version {base_version}")
        variant_settings = dict(make_variant(base_dir, out_dir, technique, representative=representative))
        variant = _load_local(found, store, out_dir, technique)
        base_metrics = variant_metrics = {}
        if data is not None:
            say(f"{name}: evaluating base and variant on {data.rows} held-out rows")
            base_metrics = _evaluate(base, data, "the base version")
            variant_metrics = _evaluate(variant, data, f"the {technique} variant")
        say(f"{name}: measuring speed side by side, pinned to one core")
        timing_rows = data.inputs if data is not None else samples
        assert timing_rows is not None
        columns = evaluation.served_columns(found.schema, timing_rows, "speed rows")
        speeds = measure(
            {"base": _runner(base), "variant": _runner(variant)},
            columns,
            found.spec.max_batch_size,
            speed or SpeedPlan(),
        )
        result = Result(
            name=name,
            technique=technique,
            base=_row(base_version, base_dir, base_metrics, speeds["base"]),
            variant=_row(None, out_dir, variant_metrics, speeds["variant"]),
            settings=variant_settings,
            gate=data.metrics[0] if data is not None else None,
            drop_points=None,
            max_drop=float(max_drop),
            notes=notes,
        )
        result = _gate(result, force)
        metadata = {
            "metrics": {
                **result.variant.metrics,
                "p50_batch1_ms": result.variant.p50_batch1_ms,
                "preds_per_s": result.variant.preds_per_s,
                "max_batch_size": result.variant.max_batch_size,
                "size_bytes": result.variant.size_bytes,
            },
            "lineage": {"base_version": base_version, "technique": technique, "settings": variant_settings},
            "optimize": {"base": result.base.describe(), "variant": result.variant.describe()},
            "data": loaded.metadata.get("data"),
        }
        version = store.publish(checkpoint, out_dir, metadata=metadata)
    say(f"{name}: published version {version} ({technique} of version {base_version})")
    return Result(**{**result.__dict__, "published_version": version})


def _base_version(
    store: CheckpointStore, checkpoint: str, from_version: str | int, say: Callable[[str], object]
) -> int:
    """The version to optimize: ``--from``, where ``latest`` made by ``fn optimize`` means the
    trained version it was made from (a variant of a variant is refused: it would compound the
    losses, measured against a base that is not the trained model)."""
    version = store.resolve(checkpoint, from_version)
    lineage = store.manifest(checkpoint, version).metadata.get("lineage") or {}
    technique, base = lineage.get("technique"), lineage.get("base_version")
    if technique is None or technique == "precompute" or not isinstance(base, int):
        return version
    if str(from_version) == "latest":
        say(
            f"{checkpoint}: the latest version, {version}, is a {technique} variant of version "
            f"{base}: optimizing {base}"
        )
        return _base_version(store, checkpoint, base, say)
    raise OptimizeError(
        f"{checkpoint} version {version} is already a {technique} variant of version {base}: "
        f"optimize the version it was made from (--from {base})"
    )


def _find(name: str, targets: Iterable[str | Path]) -> FoundFunction:
    found = {f.spec.name: f for f in discover(targets)}
    if name not in found:
        raise OptimizeError(
            f"no function named {name!r}; the project has {', '.join(sorted(found)) or 'none'}"
        )
    return found[name]


def _read_data(
    found: FoundFunction, folder: Path, version: int, force: bool
) -> tuple[EvaluationData | None, dict[str, np.ndarray] | None, tuple[str, ...]]:
    """The version's evaluation data (checked against the function's inputs) and its sample."""
    name = found.spec.name
    data = evaluation.read(folder)
    samples = evaluation.read_representative(folder)
    notes: tuple[str, ...] = ()
    if data is None:
        if not force:
            raise OptimizeError(
                f"{name} version {version} has no evaluation data ({evaluation.EVALUATION_FILE}), so the "
                "variant's accuracy cannot be measured: retrain publishing held-out data with "
                "ctx.publish(..., evaluation=Evaluation(inputs=..., labels=..., metrics=(...))), "
                "or pass --force to publish without measuring accuracy"
            )
        notes = (f"accuracy not measured: version {version} has no evaluation data (--force)",)
    else:
        inputs = evaluation.served_columns(found.schema, data.inputs, f"evaluation data of version {version}")
        lengths = {len(column) for column in (*inputs.values(), *data.labels.values())}
        if len(lengths) > 1:
            raise EvaluationDataError(
                f"evaluation data of version {version}: labels and inputs have different lengths"
            )
        data = EvaluationData(inputs, data.labels, data.metrics)
        try:
            task_metrics.check_names(data.metrics)
        except ValueError as exc:
            raise EvaluationDataError(f"evaluation data of version {version}: {exc}") from None
    if samples is not None:
        samples = evaluation.served_columns(
            found.schema, samples, f"representative data of version {version}"
        )
    elif data is None:
        raise OptimizeError(
            f"{name} version {version} has neither evaluation nor representative data: no rows to "
            "measure the speed on; retrain publishing them (ctx.publish(..., evaluation=, representative=))"
        )
    return data, samples, notes


def _model_inputs(
    found: FoundFunction, store: CheckpointStore, version: int, samples: Mapping[str, np.ndarray]
) -> list[dict[str, np.ndarray]]:
    """What the function feeds its model on the representative rows, call by call."""
    from fnserve.runtime.models import recording

    with recording() as calls:
        served = ServedFunction(found, store, str(version), warm_up=False)
        served.load()  # the model is made inside the block: recording sees its calls
        _call_batched(served, samples, "the representative rows")
    if not calls:
        raise OptimizeError(
            f"{found.path}: the loader made no model with fnserve.load_model, so the inputs to "
            "calibrate on cannot be recorded; load the checkpoint with fnserve.load_model(checkpoint_dir)"
        )
    return [dict(call) for call in calls]


def _load_local(found: FoundFunction, store: CheckpointStore, folder: Path, technique: str) -> ServedFunction:
    """The unpublished variant, loaded by the function's own loader, as the runtime would serve it."""
    assert found.spec.loader is not None
    started = time.perf_counter()
    try:
        model = found.spec.loader(str(folder))
    except Exception as exc:
        raise OptimizeError(
            f"{found.path}: the {technique} variant does not load with the function's loader: "
            f"{type(exc).__name__}: {exc}; load checkpoints with fnserve.load_model so that every "
            "variant loads the same way"
        ) from exc
    served = ServedFunction(found, store, warm_up=False)
    served.loaded = LoadedModel(
        model, None, None, time.time(), time.perf_counter() - started, path=str(folder)
    )
    return served


def _runner(served: ServedFunction) -> Callable[[dict[str, Any], int], Any]:
    return lambda columns, n: served.call(columns, n)


def _call_batched(served: ServedFunction, columns: Mapping[str, Any], what: str) -> Outputs:
    rows = len(next(iter(columns.values())))
    step = served.spec.max_batch_size
    parts = []
    for start in range(0, rows, step):
        batch = {name: column[start : start + step] for name, column in columns.items()}
        try:
            parts.append(served.call(batch, min(step, rows - start)))
        except Exception as exc:
            message = getattr(exc, "message", f"{type(exc).__name__}: {exc}")
            raise OptimizeError(f"running {served.name!r} on {what} failed: {message}") from exc
    return Outputs.concat(parts)


def _evaluate(served: ServedFunction, data: EvaluationData, what: str) -> dict[str, float]:
    """The task's metrics of ``served`` on the evaluation data."""
    outputs = _call_batched(served, data.inputs, f"the evaluation data ({what})")
    labels, scores, names = _targets(outputs, data.labels)
    values: dict[str, float] = {}
    for metric in data.metrics:
        try:
            values |= task_metrics.compute(metric, labels, scores, names)
        except ValueError as exc:
            raise EvaluationDataError(f"evaluation data: {metric} of {what}: {exc}") from None
    return {key: round(value, 6) for key, value in values.items()}


def _targets(
    outputs: Outputs, labels: Mapping[str | None, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, Sequence[str] | None]:
    """Labels and the matching scores as (n, labels) matrices, and the label names."""
    if outputs.named is not None:
        keys = [key for key in labels if key is not None]
        if None in labels or not keys:
            raise EvaluationDataError(
                "evaluation data: the labels are one column but the function returns named outputs "
                f"({', '.join(outputs.named)}): give labels={{output key: column}}"
            )
        unknown = [key for key in keys if key not in outputs.named]
        if unknown:
            raise EvaluationDataError(
                f"evaluation data: labels for {', '.join(map(repr, unknown))}, which the function does not "
                f"return (its outputs: {', '.join(outputs.named)})"
            )
        stacked = np.stack([np.asarray(labels[k], np.float64).reshape(-1) for k in keys], axis=1)
        scores = np.stack([_numbers(outputs.named[k], k) for k in keys], axis=1)
        return stacked, scores, keys
    if set(labels) != {None}:
        raise EvaluationDataError(
            f"evaluation data: labels by output key ({', '.join(map(str, labels))}) but the function "
            "returns one output: give labels as one column"
        )
    assert outputs.value is not None
    column = np.asarray(labels[None])
    scores = _numbers(outputs.value, "output")
    return column.reshape(len(column), -1), scores.reshape(len(scores), -1), None


def _numbers(column: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvaluationDataError(f"evaluation data: the function's {what} is not numeric scores") from None


def _gate(result: Result, force: bool) -> Result:
    """The result with its drop measured; ``Refused`` when it is too large and not forced."""
    if result.gate is None:
        return result
    metric = result.gate
    base, variant = result.base.metrics[metric], result.variant.metrics[metric]
    drop = task_metrics.drop_points(metric, base=base, variant=variant)
    result = Result(**{**result.__dict__, "drop_points": drop})
    if drop <= result.max_drop:
        return result
    said = (
        f"{metric} drops {drop:.2f} points (base version {result.base.version}: {base:.4f}, "
        f"{result.technique} variant: {variant:.4f}), more than the limit of {result.max_drop:g} "
        "(--max-drop)"
    )
    if not force:
        raise Refused(f"{result.name}: not published: {said}; pass --force to publish it anyway", result)
    return Result(**{**result.__dict__, "notes": (*result.notes, f"published with --force: {said}")})


def _row(version: int | None, folder: Path, metrics: dict[str, float], speed: Mapping[str, float]) -> Row:
    return Row(
        version=version,
        format=model_format(folder),
        size_bytes=model_bytes(folder),
        metrics=metrics,
        p50_batch1_ms=float(speed["p50_batch1_ms"]),
        preds_per_s=float(speed["preds_per_s"]),
        max_batch_size=int(speed["max_batch_size"]),
    )


def model_format(folder: Path) -> str:
    """The model format a version folder holds, from its descriptor (none: a SavedModel)."""
    descriptor = folder / MODEL_DESCRIPTOR
    if not descriptor.is_file():
        return "savedmodel"
    try:
        return str(json.loads(descriptor.read_text()).get("format", "savedmodel"))
    except (ValueError, AttributeError):
        return "unknown"


def model_bytes(folder: Path) -> int:
    """Bytes of a version folder's model files: fnserve's own files beside them are not counted."""
    return sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith("fnserve-") and not p.name.startswith(".fnserve")
    )

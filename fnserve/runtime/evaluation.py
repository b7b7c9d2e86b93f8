"""Held-out evaluation data and a representative sample, published inside a version's folder.

Training writes them beside the model (``TrainContext.publish(..., evaluation=, representative=)``)
so that the manifest covers them, and ``fn optimize`` measures a variant against its base on them:

- :data:`EVALUATION_FILE`: the function's input columns by input name, the label columns
  (``label``, or ``label:<output key>`` for named outputs) and, in the schema metadata, the
  metrics to report (the first one gates ``--max-drop``);
- :data:`REPRESENTATIVE_FILE`: at most :data:`MAX_REPRESENTATIVE_ROWS` rows of training inputs,
  the calibration data of full-integer quantization.

Columns are stored as Arrow types (strings, numbers, booleans; fixed-shape tensors for images and
tensors) and read back in the form a vectorized function receives them (``ServedFunction.call``):

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> evaluation = Evaluation({"price": [120.0, 80.5], "season": ["summer", "winter"]}, [1, 0], ("roc_auc",))
>>> write(folder, evaluation, representative={"price": [99.0], "season": ["spring"]})
>>> data = read(folder)
>>> data.metrics, data.labels, data.inputs["season"]
(('roc_auc',), {None: array([1, 0])}, array(['summer', 'winter'], dtype=object))
>>> read_representative(folder)["price"]
array([99.])
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fnserve.runtime import columns as checks
from fnserve.runtime.errors import FnError
from fnserve.runtime.schema import Schema

EVALUATION_FILE = "fnserve-evaluation.parquet"
REPRESENTATIVE_FILE = "fnserve-representative.parquet"
MAX_REPRESENTATIVE_ROWS = 1000  # enough to calibrate int8 ranges; more only slows the converter
LABEL = "label"  # the label column of a function with one output; "label:<key>" for named outputs
_METADATA_KEY = b"fnserve.evaluation"
# The metrics evaluation data may name, and whether higher is better; `fn optimize` computes them
# (fnserve.optimize.metrics, with scikit-learn). f1_at_0.5 is reported per label too.
METRICS = {
    "roc_auc": True,
    "log_loss": False,
    "mean_average_precision": True,
    "f1_at_0.5": True,
    "mean_absolute_error": False,  # regressions, in the label's units
}


class EvaluationDataError(FnError, ValueError):
    """Evaluation or representative data that cannot be used: the message names the column."""

    status = 422


@dataclass(frozen=True)
class Evaluation:
    """Held-out data to measure a version by: what the function takes, what it should answer.

    ``inputs`` are columns by the function's input names; ``labels`` one column (a function with
    one output) or a mapping of them by output key (a function returning named outputs);
    ``metrics`` names from :data:`METRICS`, the first one deciding
    whether ``fn optimize`` may publish a variant.

    >>> Evaluation({"x": [1.0, 2.0]}, labels=[0, 1], metrics=("roc_auc", "log_loss")).rows
    2
    """

    inputs: Mapping[str, Any]
    labels: Any
    metrics: Sequence[str] = ("roc_auc",)

    @property
    def rows(self) -> int:
        return len(next(iter(self.labels.values())) if isinstance(self.labels, Mapping) else self.labels)


@dataclass(frozen=True)
class EvaluationData:
    """Evaluation data as read back: ``labels`` by output key (``None``: the one output)."""

    inputs: dict[str, np.ndarray]
    labels: dict[str | None, np.ndarray]
    metrics: tuple[str, ...]

    @property
    def rows(self) -> int:
        return len(next(iter(self.labels.values())))


def write(
    folder: Path, evaluation: Evaluation | None, representative: Mapping[str, Any] | None = None
) -> None:
    """Write the evaluation data and the representative sample (either may be None) into ``folder``."""
    if evaluation is not None:
        try:
            metrics = check_names(evaluation.metrics)
        except ValueError as exc:
            raise EvaluationDataError(f"evaluation: {exc}") from None
        labels = evaluation.labels
        named = dict(labels) if isinstance(labels, Mapping) else {None: labels}
        if not named:
            raise EvaluationDataError("evaluation: no labels given")
        label_columns = {(LABEL if key is None else f"{LABEL}:{key}"): col for key, col in named.items()}
        clash = sorted(set(label_columns) & set(evaluation.inputs))
        if clash:
            raise EvaluationDataError(f"evaluation: an input is named {clash[0]!r}, as a label column is")
        table = _table({**evaluation.inputs, **label_columns}, "evaluation")
        meta = {
            "metrics": list(metrics),
            "inputs": list(evaluation.inputs),
            "labels": [[column, key] for column, key in zip(label_columns, named, strict=True)],
        }
        table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(meta).encode()})
        pq.write_table(table, folder / EVALUATION_FILE)
    if representative is not None:
        table = _table(representative, "representative")
        if table.num_rows > MAX_REPRESENTATIVE_ROWS:  # a sample across all the rows, not the first ones
            rng = np.random.default_rng(0)
            table = table.take(np.sort(rng.choice(table.num_rows, MAX_REPRESENTATIVE_ROWS, replace=False)))
        pq.write_table(table, folder / REPRESENTATIVE_FILE)


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, or a ``ValueError`` naming the unknown one and the known ones."""
    if isinstance(names, str):
        names = (names,)
    if not names:
        raise ValueError(f"no metric given; choose from {', '.join(METRICS)}")
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return tuple(names)


def read(folder: str | Path) -> EvaluationData | None:
    """The evaluation data in a version folder, or None when it has none."""
    path = Path(folder) / EVALUATION_FILE
    if not path.is_file():
        return None
    table = pq.read_table(path)
    try:
        meta = json.loads((table.schema.metadata or {})[_METADATA_KEY])
        metrics, inputs, labels = tuple(meta["metrics"]), meta["inputs"], meta["labels"]
    except (KeyError, ValueError, TypeError):
        raise EvaluationDataError(f"{EVALUATION_FILE}: no fnserve metadata saying its metrics") from None
    columns = _columns(table)
    return EvaluationData(
        inputs={name: columns[name] for name in inputs},
        labels={key: columns[column] for column, key in labels},
        metrics=metrics,
    )


def read_representative(folder: str | Path) -> dict[str, np.ndarray] | None:
    """The representative sample in a version folder (columns by input name), or None."""
    path = Path(folder) / REPRESENTATIVE_FILE
    return _columns(pq.read_table(path)) if path.is_file() else None


def served_columns(schema: Schema, columns: Mapping[str, np.ndarray], what: str) -> dict[str, Any]:
    """``columns`` checked against the function's inputs and cast as the codec would hand them over;
    an error names the missing, unknown or bad input and ``what`` data it is in."""
    names = {f.name for f in schema.inputs}
    unknown = sorted(set(columns) - names)
    missing = [f.name for f in schema.inputs if f.required and f.name not in columns]
    if unknown or missing:
        said = [f"no input named {', '.join(map(repr, unknown))}" if unknown else ""]
        said += [f"input {', '.join(map(repr, missing))} missing" if missing else ""]
        raise EvaluationDataError(
            f"{what}: columns do not match the function's inputs ({'; '.join(s for s in said if s)}); "
            f"its inputs are {', '.join(f.name for f in schema.inputs)}"
        )
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        raise EvaluationDataError(f"{what}: columns of different lengths ({_lengths(lengths)})")
    rows = next(iter(lengths.values()), 0)
    out: dict[str, Any] = {}
    for field in schema.inputs:
        column = columns.get(field.name)
        if column is None:
            column = np.full(rows, field.default, dtype=field.dtype if field.dtype != "object" else object)
        try:
            out[field.name] = checks.check(field, np.asarray(column))
        except FnError as exc:
            raise EvaluationDataError(f"{what}: {exc.message}") from None
    return out


def _table(columns: Mapping[str, Any], what: str) -> pa.Table:
    if not columns:
        raise EvaluationDataError(f"{what}: no columns given")
    arrays = {str(name): _array(column) for name, column in columns.items()}
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise EvaluationDataError(f"{what}: columns of different lengths ({_lengths(lengths)})")
    try:
        return pa.table({name: _arrow(name, array, what) for name, array in arrays.items()})
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise EvaluationDataError(f"{what}: cannot store the columns: {exc}") from None


def _array(column: Any) -> np.ndarray:
    if hasattr(column, "numpy") and not isinstance(column, np.ndarray):  # TensorFlow tensors
        column = column.numpy()
    array = np.asarray(column)
    if array.dtype.kind == "S":  # tf.string columns come back as bytes
        array = np.char.decode(array, "utf-8").astype(object)
    return array


def _arrow(name: str, array: np.ndarray, what: str) -> pa.Array:
    if array.ndim == 0:
        raise EvaluationDataError(f"{what}: column {name!r} is a scalar, not one value per row")
    if array.ndim > 1:  # images (n, H, W, C) and tensors: one fixed-shape tensor per row
        return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(array))
    return pa.array(array.astype(object) if array.dtype.kind == "U" else array)


def _columns(table: pa.Table) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if isinstance(column, pa.FixedShapeTensorArray):
            out[name] = column.to_numpy_ndarray()
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out


def _lengths(lengths: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in lengths.items())

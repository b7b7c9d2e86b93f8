"""The task metrics ``fn optimize`` measures a base version and its variant by (scikit-learn).

Labels and scores are matrices of one column per label (a single output is one column); a
metric returns its value, and ``f1_at_0.5`` its value per label too. A *point* is 0.01 of a
metric's value, whichever way it improves:

>>> labels = np.array([[0], [0], [1], [1]])
>>> scores = np.array([[0.1], [0.6], [0.4], [0.8]])
>>> compute("roc_auc", labels, scores)
{'roc_auc': 0.75}
>>> drop_points("log_loss", base=0.30, variant=0.32)  # lower is better: +0.02 is a 2-point drop
2.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fnserve.runtime import evaluation
from fnserve.runtime.evaluation import check_names

__all__ = ["METRICS", "POINT", "check_names", "compute", "drop_points"]

POINT = 0.01  # one point of a metric, absolute: what --max-drop counts in


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    per_label: bool  # also reported for each label, as "name/label"
    score: Callable[[np.ndarray, np.ndarray], float]  # (labels (n,), scores (n,)) -> value, one label


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1]))


def _average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


def _f1_at_half(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, scores >= 0.5, zero_division=0.0))


def _mean_absolute_error(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(labels, scores))


_SCORES = {
    "roc_auc": _roc_auc,
    "log_loss": _log_loss,
    "mean_average_precision": _average_precision,
    "f1_at_0.5": _f1_at_half,
    "mean_absolute_error": _mean_absolute_error,
}
PER_LABEL = {"f1_at_0.5"}
# Which names exist and which way each improves is said once, where training names them.
METRICS = {
    name: Metric(name, higher, name in PER_LABEL, _SCORES[name])
    for name, higher in evaluation.METRICS.items()
}


def compute(
    name: str, labels: np.ndarray, scores: np.ndarray, label_names: Sequence[str] | None = None
) -> dict[str, float]:
    """The metric over every label column (their mean), and per label where the metric says so.

    >>> labels = np.array([[1, 0], [0, 1], [1, 1]])
    >>> compute("f1_at_0.5", labels, np.array([[0.9, 0.2], [0.3, 0.7], [0.4, 0.8]]), ["pool", "bed"])
    {'f1_at_0.5': 0.8333333333333333, 'f1_at_0.5/pool': 0.6666666666666666, 'f1_at_0.5/bed': 1.0}
    """
    metric = METRICS[name]
    labels, scores = _matrix(labels), _matrix(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"{name}: labels of shape {labels.shape} but scores of shape {scores.shape}")
    names = list(label_names) if label_names is not None else [str(j) for j in range(labels.shape[1])]
    each = [metric.score(labels[:, j], scores[:, j].astype(np.float64)) for j in range(labels.shape[1])]
    values = {name: float(np.mean(each))}
    if metric.per_label and label_names is not None:
        values |= {f"{name}/{label}": value for label, value in zip(names, each, strict=True)}
    return values


def drop_points(name: str, *, base: float, variant: float) -> float:
    """How many points worse ``variant`` is than ``base`` (negative: better)."""
    worse = base - variant if METRICS[name].higher_is_better else variant - base
    return round(worse / POINT, 6)


def _matrix(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values.reshape(len(values), -1)

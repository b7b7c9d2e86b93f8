"""The task metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fnserve.optimize.metrics import check_names, compute, drop_points

LABELS = np.array([0, 0, 1, 1, 0, 1])
SCORES = np.array([0.1, 0.6, 0.4, 0.8, 0.3, 0.9])


def test_roc_auc_is_the_share_of_positive_negative_pairs_ranked_right() -> None:
    # positives 0.4, 0.8, 0.9 against negatives 0.1, 0.6, 0.3: 0.4 loses to 0.6 only -> 8 of 9 pairs
    assert compute("roc_auc", LABELS, SCORES) == {"roc_auc": pytest.approx(8 / 9)}


def test_log_loss_is_the_mean_negative_log_likelihood() -> None:
    expected = -np.mean(
        [math.log(0.9), math.log(0.4), math.log(0.4), math.log(0.8), math.log(0.7), math.log(0.9)]
    )
    assert compute("log_loss", LABELS, SCORES)["log_loss"] == pytest.approx(expected)


def test_mean_average_precision_averages_each_labels_precision_at_its_positives() -> None:
    # label 1 of SCORES: ranked 0.9+, 0.8+, 0.6-, 0.4+ -> precisions 1, 1, 3/4 -> AP 11/12
    # label 2: scores rank its positives first and third -> precisions 1, 2/3 -> AP 5/6
    labels = np.stack([LABELS, np.array([1, 0, 0, 0, 1, 0])], axis=1)
    scores = np.stack([SCORES, np.array([0.9, 0.2, 0.8, 0.1, 0.7, 0.3])], axis=1)
    value = compute("mean_average_precision", labels, scores, ["pool", "bed"])
    assert value == {"mean_average_precision": pytest.approx((11 / 12 + 5 / 6) / 2)}


def test_f1_at_half_is_given_per_label_and_as_their_mean() -> None:
    # label 1 at 0.5: predicted 0.6, 0.8, 0.9 -> tp 2, fp 1, fn 1 -> F1 2/3; label 2: tp 1, fp 1, fn 1 -> 1/2
    labels = np.stack([LABELS, np.array([1, 0, 0, 0, 1, 0])], axis=1)
    scores = np.stack([SCORES, np.array([0.9, 0.2, 0.8, 0.1, 0.4, 0.3])], axis=1)
    value = compute("f1_at_0.5", labels, scores, ["pool", "bed"])
    assert value == pytest.approx({"f1_at_0.5": 7 / 12, "f1_at_0.5/pool": 2 / 3, "f1_at_0.5/bed": 1 / 2})


def test_a_point_is_a_hundredth_and_lower_is_better_for_log_loss() -> None:
    assert drop_points("roc_auc", base=0.80, variant=0.785) == pytest.approx(1.5)
    assert drop_points("log_loss", base=0.40, variant=0.39) == pytest.approx(-1.0)


def test_unknown_metrics_are_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'auc'; choose from roc_auc, log_loss, "):
        check_names(["roc_auc", "auc"])

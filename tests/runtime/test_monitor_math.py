"""The statistics behind drift scores, on known values: bins, PSI, Jensen-Shannon, windows, merging."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from fnserve.runtime.monitor import merge
from fnserve.runtime.monitor.drift import EPSILON, js_distance, psi, smooth
from fnserve.runtime.monitor.features import infer
from fnserve.runtime.monitor.reference import build, parse
from fnserve.runtime.monitor.window import Window


def test_psi_is_the_sum_of_share_differences_times_their_log_ratio() -> None:
    p, q = np.array([0.1, 0.2, 0.7]), np.array([0.3, 0.3, 0.4])
    expected = sum((b - a) * math.log(b / a) for a, b in zip(smooth(p), smooth(q), strict=True))
    assert psi(p, q) == pytest.approx(expected)
    assert psi(p, q) == pytest.approx(0.4281, abs=1e-3)  # unsmoothed: 0.2197 + 0.0405 + 0.1679
    assert psi(p, p) == 0.0


def test_empty_bins_are_smoothed_to_a_finite_psi() -> None:
    score = psi([1.0, 0.0], [0.0, 1.0])
    big, small = (1 + EPSILON) / (1 + 2 * EPSILON), EPSILON / (1 + 2 * EPSILON)
    assert score == pytest.approx(2 * (big - small) * math.log(big / small))
    assert math.isfinite(score)


def test_js_distance_is_zero_for_equal_one_for_disjoint_and_symmetric() -> None:
    assert js_distance([0.2, 0.8], [0.2, 0.8]) == 0.0
    assert js_distance([1, 0, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)
    p, q = [0.5, 0.5], [0.9, 0.1]
    assert js_distance(p, q) == pytest.approx(js_distance(q, p))
    m = np.array([0.7, 0.3])
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True))  # noqa: E731
    assert js_distance(p, q) == pytest.approx(math.sqrt(0.5 * kl(p, m) + 0.5 * kl(q, m)))


def test_numeric_bins_come_from_the_reference_quantiles_with_under_and_overflow() -> None:
    (feature,) = infer("price", "input", "price", np.arange(0.0, 101.0))
    assert feature.edges == pytest.approx([float(x) for x in range(0, 101, 10)])
    assert feature.bins == 12 and feature.labels()[0] == "<0" and feature.labels()[-1] == ">100"
    # the maximum belongs in the last bin, not in the overflow; NaN is missing (slot `bins`)
    assert feature.indices(np.array([-1.0, 0.0, 9.9, 100.0, 100.5, np.nan])).tolist() == [0, 1, 1, 10, 11, 12]


def test_categorical_values_outside_the_vocabulary_count_as_other() -> None:
    (feature,) = infer("city", "input", "city", np.array(["a", "a", "b"], dtype=object))
    assert feature.values == ("a", "b") and feature.labels() == ["a", "b", "other"]
    assert feature.indices(np.array(["b", "zzz", "a"], dtype=object)).tolist() == [1, 2, 0]
    (flag,) = infer("flag", "input", "flag", np.array([True, False]))
    assert flag.indices(np.array([True, True, False])).tolist() == [1, 1, 0]


def test_images_are_profiled_by_their_mean_and_std() -> None:
    photos = np.stack([np.full((4, 4, 3), v, np.uint8) for v in range(0, 250, 10)])
    mean, std = infer("photo", "input", "photo", photos)
    assert (mean.name, mean.type, mean.stat, std.stat) == ("photo.mean", "tensor", "mean", "std")
    dark = photos // 4
    assert mean.indices(dark).mean() < mean.indices(photos).mean()


def test_a_reference_round_trips_and_counts_every_row() -> None:
    data = {"x": np.linspace(0, 1, 200), "c": np.array(["u", "v"] * 100, dtype=object)}
    doc = build(data, {"score": np.linspace(0, 1, 200)})
    ref = parse(doc)
    assert [f.name for f in ref.features] == ["x", "c", "score"]
    assert all(counts.sum() == 200 for counts in ref.counts)
    assert ref.shares(1).tolist() == [0.5, 0.5, 0.0]
    with pytest.raises(ValueError, match="counts"):
        parse({**doc, "features": [{**doc["features"][0], "counts": [1]}]})


def test_the_window_forgets_by_time_and_by_count() -> None:
    w = Window(1, seconds=10, count=100, buckets=10)
    for t in range(5):
        w.add(np.array([1]), 1, now=float(t))
    assert w.totals(now=5.0) == (5, [5])
    assert w.totals(now=12.5)[0] == 2  # the buckets started at t=0, 1, 2 are older than 10 s
    for i in range(1000):
        w.add(np.array([1]), 1, now=20 + i * 1e-4)
    samples, _ = w.totals(now=20.2)
    assert 100 <= samples <= 110  # the last `count`, to a bucket's precision
    assert len(w._ring) <= 11  # bounded whatever the traffic


def _payload(counts: list[int], samples: int, missing: int) -> dict[str, object]:
    feature = {"name": "x", "role": "input", "type": "numeric", "psi": None, "js": None}
    feature |= {"psi_threshold": 0.2, "js_threshold": 0.1, "drifted": False, "bins": ["<0", "0-1", ">1"]}
    feature |= {"reference": [0.0, 1.0, 0.0], "live": [], "counts": counts}
    feature |= {"missing_share": missing / samples, "unknown_share": (counts[0] + counts[2]) / samples}
    window = {"seconds": 60.0, "count": 100, "samples": samples, "min_samples": 50}
    version = {"reference": True, "note": None, "window": window, "features": [feature]}
    return {"functions": {"f": {"versions": {"1": version}}}}


def test_merge_sums_counts_and_scores_the_sums_not_the_average() -> None:
    a, b = _payload([0, 30, 0], 31, 1), _payload([0, 0, 30], 30, 0)
    merged = merge([a, b])["functions"]["f"]["versions"]["1"]
    (feature,) = merged["features"]
    assert merged["window"]["samples"] == 61
    assert feature["counts"] == [0, 30, 30]
    assert feature["live"] == [0.0, 0.5, 0.5]
    assert feature["missing_share"] == pytest.approx(1 / 61)
    assert feature["unknown_share"] == pytest.approx(30 / 61)
    assert feature["psi"] == pytest.approx(psi([0, 1, 0], [0, 0.5, 0.5]), abs=1e-6)
    assert feature["drifted"]  # 61 samples >= min_samples 50, each replica alone was below it
    assert merge([copy.deepcopy(a)]) == merge([a])

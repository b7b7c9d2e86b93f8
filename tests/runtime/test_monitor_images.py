"""Images are watched through per-photo summaries: darkened photos move ``photo.mean`` over its
threshold; dict outputs are watched per key; a batch the bins cannot read never fails a prediction."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fnserve import Image
from fnserve.runtime.monitor import Monitor, MonitorConfig, reference
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.schema import Schema


def tagger(photo: Image[8, 8]) -> dict[str, float]:  # type: ignore[valid-type]
    raise NotImplementedError  # only its signature matters here


def photos(n: int, seed: int, brightness: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, size=(n, 1, 1, 3))
    noise = rng.integers(-30, 30, size=(n, 8, 8, 3))
    return np.clip((base + noise) * brightness, 0, 255).astype(np.uint8)


def scores(images: np.ndarray) -> dict[str, np.ndarray]:
    light = images.reshape(len(images), -1).mean(axis=1) / 255
    return {"sea_view": light, "bed": 1 - light}


@pytest.fixture(name="monitor")
def monitor_fixture(tmp_path: Path) -> Monitor:
    return monitor(tmp_path)


def monitor(folder: Path) -> Monitor:
    folder.mkdir(parents=True, exist_ok=True)
    train = photos(2000, seed=1)
    reference.write(folder, reference.build({"photo": train}, scores(train)))
    schema = Schema.from_function(tagger, has_model=False, where="test")
    watched = Monitor([("tagger", schema, MonitorConfig(min_samples=50))])
    watched.loaded("tagger", 1, str(folder))
    return watched


def observe(monitor: Monitor, images: np.ndarray) -> dict[str, dict[str, Any]]:
    for start in range(0, len(images), 64):
        batch = images[start : start + 64]
        monitor.observe("tagger", {"photo": batch}, Outputs.of(scores(batch), len(batch), "tagger", 1))
    entry = monitor.describe()["functions"]["tagger"]["versions"]["1"]
    return {f["name"]: f for f in entry["features"]}


def test_photos_like_the_reference_stay_below(monitor: Monitor) -> None:
    found = observe(monitor, photos(500, seed=2))
    assert set(found) == {"photo.mean", "photo.std", "sea_view", "bed"}
    assert found["photo.mean"]["type"] == "tensor" and found["bed"]["role"] == "output"
    assert not any(f["drifted"] for f in found.values()), found


def test_darkened_photos_drift_on_their_mean_and_the_outputs(monitor: Monitor) -> None:
    found = observe(monitor, photos(500, seed=3, brightness=0.5))
    assert found["photo.mean"]["drifted"] and found["photo.mean"]["psi"] > 1
    assert found["sea_view"]["drifted"] and found["bed"]["drifted"]


def test_a_batch_the_bins_cannot_read_is_logged_once_and_not_raised(
    monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    odd = Outputs.of({"sea_view": [{"not": "a number"}], "bed": [0.1]}, 1, "tagger", 1)
    with caplog.at_level(logging.ERROR, logger="fnserve.monitor"):
        for _ in range(3):
            monitor.observe("tagger", {"photo": photos(1, seed=4)}, odd)
        monitor.describe("tagger")  # small batches are binned together, at the latest before a read
    assert caplog.text.count("profiling a batch failed") == 1


def test_lone_rows_are_gathered_and_binned_as_one_batch_would_be(tmp_path: Path) -> None:
    images = photos(150, seed=6)
    one_by_one, at_once = (monitor(tmp_path / name) for name in ("single", "whole"))
    for i in range(len(images)):  # 150 batches of one row: binned in gathers of 64, then on read
        batch = images[i : i + 1]
        one_by_one.observe("tagger", {"photo": batch}, Outputs.of(scores(batch), 1, "tagger", 1))
    pending = one_by_one.functions["tagger"]._pending_rows
    assert 0 < pending < 64  # gathered, not yet binned
    at_once.observe("tagger", {"photo": images}, Outputs.of(scores(images), len(images), "tagger", 1))
    single, whole = (m.describe()["functions"]["tagger"]["versions"]["1"] for m in (one_by_one, at_once))
    assert single["window"]["samples"] == whole["window"]["samples"] == 150
    assert [f["psi"] for f in single["features"]] == [f["psi"] for f in whole["features"]]

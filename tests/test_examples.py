"""The example functions (recs, tagger): their data, their training and their predictions.

Fast tests check the synthetic data (deterministic, consistent, learnable) without
TensorFlow. Slow tests run each ``train.py`` as ``fn train`` does, into a temporary store,
then load the published checkpoint with the function's own loader and call the function
directly with numpy columns, as the runtime does.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from fnserve.runtime.store import CheckpointStore
from fnserve.runtime.training import TrainContext

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"


def load_file(name: str, file: str) -> ModuleType:
    """Import ``functions/<name>/<file>`` under a unique module name, as the runtime does."""
    module_name = f"example_{name}_{file.removesuffix('.py')}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recs_train() -> ModuleType:
    return load_file("recs", "train.py")


@pytest.fixture(scope="module")
def tagger_train() -> ModuleType:
    return load_file("tagger", "train.py")


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``functions/<name>/train.py`` from the project root, as ``fn train`` does."""
    environ = {**os.environ, **(env or {})}
    # The project root on the path: the script's own folder is what Python puts there.
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(FUNCTIONS / name / "train.py"), *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"train.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


# --- recs: data -------------------------------------------------------------------------


def test_bookings_are_deterministic(recs_train: ModuleType) -> None:
    first, again = recs_train.generate_bookings(2_000, seed=3), recs_train.generate_bookings(2_000, seed=3)
    for name, column in first.items():
        np.testing.assert_array_equal(column, again[name], err_msg=name)
    assert not np.array_equal(first["booked"], recs_train.generate_bookings(2_000, seed=4)["booked"])


def test_bookings_have_serving_types_and_ranges(recs_train: ModuleType) -> None:
    data = recs_train.generate_bookings(5_000)
    assert data["user_country"].dtype == object and isinstance(data["user_country"][0], str)
    assert set(data["season"]) == {"winter", "spring", "summer", "autumn"}
    assert data["day_of_week"].min() == 1 and data["day_of_week"].max() == 7
    assert data["hotel_price"].dtype == np.float32 and (data["hotel_price"] > 0).all()
    assert data["hotel_id"].dtype == np.int64
    assert 0.15 < data["booked"].mean() < 0.45


def test_bookings_are_learnable_from_their_columns(recs_train: ModuleType) -> None:
    data, half = recs_train.generate_bookings(20_000, seed=3), 10_000
    booked = data["booked"]
    assert recs_train.roc_auc(booked, data["true_logit"]) > 0.75  # the labels carry signal
    # Even one observable column predicts: per-hotel booking rates from one half rank the other.
    hotels, index = np.unique(data["hotel_id"], return_inverse=True)
    bookings = np.bincount(index[:half], weights=booked[:half], minlength=len(hotels))
    searches = np.bincount(index[:half], minlength=len(hotels))
    rate = (bookings + 1) / (searches + 4)
    assert recs_train.roc_auc(booked[half:], rate[index[half:]]) > 0.58


def test_roc_auc_matches_definition(recs_train: ModuleType) -> None:
    assert recs_train.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert recs_train.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


def test_bookings_parquet_round_trip(recs_train: ModuleType, tmp_path: Path) -> None:
    data = recs_train.generate_bookings(500)
    url = (tmp_path / "data" / "bookings.parquet").as_uri()
    recs_train.write_bookings(data, url)
    ctx = TrainContext.from_env(
        {"FNSERVE_DATA": url, "FNSERVE_PROJECT": str(tmp_path)}, default_function="recs"
    )
    read = recs_train.read_bookings(ctx)
    assert set(read) == {*recs_train.COLUMNS, "booked"}
    for name, column in read.items():
        assert column.dtype == data[name].dtype, name
        np.testing.assert_array_equal(column, data[name], err_msg=name)


# --- tagger: data -----------------------------------------------------------------------


def test_photos_are_deterministic(tagger_train: ModuleType) -> None:
    images, targets = tagger_train.generate_photos(40, seed=1)
    images_again, targets_again = tagger_train.generate_photos(40, seed=1)
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, images_again)
    np.testing.assert_array_equal(targets, targets_again)


def test_photo_labels_respect_the_hierarchy(tagger_train: ModuleType) -> None:
    _, targets = tagger_train.generate_photos(300, seed=2)
    column = {label: targets[:, i].astype(bool) for i, label in enumerate(tagger_train.LABELS)}
    assert len(tagger_train.LABELS) >= 6
    assert (column["inside"] ^ column["outside"]).all()
    for child, parent in tagger_train.PARENT.items():
        assert not (column[child] & ~column[parent]).any(), f"{child} without {parent}"
        assert column[child].any(), f"no photo shows {child}"


def test_photos_are_learnable(tagger_train: ModuleType) -> None:
    """Nearest class mean on 8x8 thumbnails already tells inside from outside."""
    images, targets = tagger_train.generate_photos(600, seed=2)
    thumbnails = images.reshape(600, 8, 8, 8, 8, 3).mean(axis=(2, 4)).reshape(600, -1) / 255
    inside = targets[:, tagger_train.LABELS.index("inside")].astype(bool)
    train, test = slice(0, 400), slice(400, None)
    mean_in, mean_out = thumbnails[train][inside[train]].mean(0), thumbnails[train][~inside[train]].mean(0)
    distance_in = ((thumbnails[test] - mean_in) ** 2).sum(axis=1)
    distance_out = ((thumbnails[test] - mean_out) ** 2).sum(axis=1)
    accuracy = ((distance_in < distance_out) == inside[test]).mean()
    assert accuracy > 0.75, accuracy


def test_render_scene_rejects_inconsistent_labels(tagger_train: ModuleType) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"either .inside. or .outside."):
        tagger_train.render_scene({"bed", "pool"}, rng)
    with pytest.raises(ValueError, match="unknown labels"):
        tagger_train.render_scene({"unicorn"}, rng)
    assert tagger_train.render_scene({"bed"}, rng).shape == (64, 64, 3)


def test_photos_parquet_round_trip(tagger_train: ModuleType, tmp_path: Path) -> None:
    images, targets = tagger_train.generate_photos(12, seed=3)
    url = (tmp_path / "photos.parquet").as_uri()
    tagger_train.write_photos(images, targets, url)
    read_images, read_targets = tagger_train.read_photos(url)
    np.testing.assert_array_equal(read_images, images)  # PNG is lossless
    np.testing.assert_array_equal(read_targets, targets)


def test_sample_photo_command_writes_a_jpeg(tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    run_script("tagger", "--sample-photo", str(photo), "--labels", "pool,balcony")
    with Image.open(photo) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (64, 64), "RGB")


# --- training end to end: train.py -> store -> loader -> function -----------------------


class Trained:
    """One function trained into a temporary store, fetched and loaded like the runtime does."""

    def __init__(self, name: str, workdir: Path, *args: str, env: dict[str, str] | None = None):
        store_url = (workdir / "store").as_uri()
        settings = {"FNSERVE_STORE": store_url, "FNSERVE_CACHE": str(workdir / "cache"), **(env or {})}
        started = time.perf_counter()
        self.output = run_script(name, *args, env=settings).stdout
        self.wall_s = time.perf_counter() - started
        print(f"{name}: train.py took {self.wall_s:.1f} s\n{self.output}")
        self.checkpoint = CheckpointStore(store_url, cache_dir=workdir / "cache").fetch(name)
        self.metrics = self.checkpoint.manifest.metadata["metrics"]
        self.module = load_file(name, "predict.py")
        self.model = getattr(self.module, name).__fnserve__.loader(
            str(self.checkpoint.path)
        )  # its own loader


@pytest.fixture(scope="module")
def trained_recs(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return Trained("recs", tmp_path_factory.mktemp("recs"))


@pytest.fixture(scope="module")
def trained_tagger(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return Trained("tagger", tmp_path_factory.mktemp("tagger"))


def booking_columns(rows: list[tuple[str, str, int, str, float, int]]) -> dict[str, np.ndarray]:
    """Columns as the runtime passes them: object arrays of str, int64, float64."""
    country, language, day, season, price, hotel = zip(*rows, strict=True)
    return {
        "user_country": np.array(country, dtype=object),
        "user_language": np.array(language, dtype=object),
        "day_of_week": np.array(day, dtype=np.int64),
        "season": np.array(season, dtype=object),
        "hotel_price": np.array(price, dtype=np.float64),
        "hotel_id": np.array(hotel, dtype=np.int64),
    }


@pytest.mark.slow
def test_recs_trains_better_than_chance_and_publishes(trained_recs: Trained) -> None:
    metrics = trained_recs.metrics
    assert metrics["accuracy"] > metrics["chance"] + 0.01
    assert metrics["auc"] > 0.65
    assert "held-out accuracy" in trained_recs.output and "AUC" in trained_recs.output
    assert trained_recs.checkpoint.version == 1


@pytest.mark.slow
def test_recs_scores_a_batch_in_order(trained_recs: Trained, recs_train: ModuleType) -> None:
    data = recs_train.generate_bookings(300, seed=99)
    columns = {name: data[name] for name in recs_train.COLUMNS}
    columns["hotel_price"] = columns["hotel_price"].astype(np.float64)  # the runtime's float column
    scores = trained_recs.module.recs(trained_recs.model, **columns)
    assert scores.shape == (300,) and ((scores > 0) & (scores < 1)).all()
    # Row order is kept: each row scored alone gets the score it got in the batch.
    for row in (0, 137, 299):
        alone = trained_recs.module.recs(
            trained_recs.model, **{k: v[row : row + 1] for k, v in columns.items()}
        )
        assert alone[0] == pytest.approx(scores[row], abs=1e-6)


@pytest.mark.slow
def test_recs_scores_unknown_values(trained_recs: Trained) -> None:
    known = ("NL", "nl", 5, "summer", 120.0, 0)
    columns = booking_columns(
        [
            ("ZZ", "tlh", 1, "winter", 80.0, 123_456_789),  # never-seen country, language and hotel
            ("", "", 7, "autumn", 0.0, -1),
            known,
            known,
        ]
    )
    scores = trained_recs.module.recs(trained_recs.model, **columns)
    assert scores.shape == (4,) and ((scores > 0) & (scores < 1)).all()
    assert scores[2] == scores[3]


@pytest.mark.slow
def test_tagger_trains_better_than_chance_and_publishes(trained_tagger: Trained) -> None:
    metrics = trained_tagger.metrics
    assert metrics["accuracy"] > metrics["chance"] + 0.15
    assert metrics["micro_f1"] > 0.8
    assert "held-out mean accuracy" in trained_tagger.output


@pytest.mark.slow
def test_tagger_tags_photos_and_respects_the_hierarchy(
    trained_tagger: Trained, tagger_train: ModuleType
) -> None:
    rng = np.random.default_rng(2024)
    shown = [{"bed"}, {"sea_view", "balcony"}, {"pool"}, {"breakfast_buffet"}, {"outside"}, {"bed"}]
    photos = np.stack([tagger_train.render_scene(labels, rng) for labels in shown])
    photos[5] = photos[0]  # the same photo twice: same scores wherever it sits in the batch
    scores = trained_tagger.module.tagger(trained_tagger.model, photo=photos)
    assert set(scores) == set(tagger_train.LABELS)
    for label, column in scores.items():
        assert column.shape == (6,) and ((column >= 0) & (column <= 1)).all(), label
        assert column[5] == column[0], label
    for child, parent in tagger_train.PARENT.items():
        assert (scores[child] <= scores[parent]).all(), f"{child} scored above {parent}"
    assert scores["bed"][0] > 0.5 and scores["inside"][0] > 0.5
    assert scores["sea_view"][1] > 0.5 and scores["balcony"][1] > 0.5
    assert scores["pool"][2] > 0.5 and scores["outside"][2] > 0.5
    assert scores["breakfast_buffet"][3] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size_flag"), [("recs", "--rows"), ("tagger", "--photos")])
def test_trains_from_a_parquet_data_url(name: str, size_flag: str, tmp_path: Path) -> None:
    """``--write-data`` output is what ``FNSERVE_DATA`` reads: the container-training path."""
    data_url = (tmp_path / "data" / f"{name}.parquet").as_uri()
    run_script(name, "--write-data", data_url, size_flag, "400")
    trained = Trained(name, tmp_path, env={"FNSERVE_DATA": data_url})
    assert trained.checkpoint.manifest.metadata["data"] == data_url
    assert 0 <= trained.metrics["accuracy"] <= 1  # 400 examples: it runs, not that it learns much

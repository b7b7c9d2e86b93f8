"""Train the hotel photo tagger: multi-label tags for a 64x64 photo.

The talk's first example: one photo, several tags. Labels form a two-level hierarchy, and
the exported model enforces it (a parent scores at least as high as any of its children):

    inside   <- bed, breakfast_buffet
    outside  <- balcony, pool, sea_view      (a balcony photo looks out: it is an outside shot)

    python functions/tagger/train.py                       # render photos, train, publish
    fn train tagger --data gs://bucket/photos.parquet      # Parquet: `image` (PNG bytes), 0/1 label columns
    python functions/tagger/train.py --write-data file:///tmp/photos.parquet
    python functions/tagger/train.py --sample-photo photo.jpg --labels sea_view,balcony

Without data the script renders synthetic scenes with numpy (:func:`render_scene`): random
walls, floors, skies and grounds, with the tagged objects drawn at random places, sizes and
colours, distractors (windows, pictures, buildings, trees) and lighting noise.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

import numpy as np

SIZE = 64
CHILDREN = {"inside": ("bed", "breakfast_buffet"), "outside": ("balcony", "pool", "sea_view")}
PARENT = {child: parent for parent, children in CHILDREN.items() for child in children}
LABELS = ("inside", "outside", *PARENT)
CHILD_RATE = {"bed": 0.45, "breakfast_buffet": 0.4, "balcony": 0.35, "pool": 0.4, "sea_view": 0.45}
_Y, _X = np.mgrid[0:SIZE, 0:SIZE]


def _color(rng: np.random.Generator, base: tuple[float, float, float], jitter: float = 0.06) -> np.ndarray:
    return np.clip(np.array(base) + rng.normal(0.0, jitter, 3), 0.0, 1.0)


def _rounded_rect(img: np.ndarray, top: int, left: int, height: int, width: int, radius: int, color) -> None:
    # A point is inside if it lies within `radius` of the rectangle shrunk by `radius`.
    near_y = np.clip(_Y, top + radius, top + height - 1 - radius)
    near_x = np.clip(_X, left + radius, left + width - 1 - radius)
    img[(_Y - near_y) ** 2 + (_X - near_x) ** 2 <= radius**2] = color


def _disc(img: np.ndarray, center_y: float, center_x: float, radius: float, color) -> None:
    img[(_Y - center_y) ** 2 + (_X - center_x) ** 2 <= radius**2] = color


def _room(img: np.ndarray, rng: np.random.Generator) -> int:
    """Wall, floor and wall decorations; returns the row where the floor starts."""
    floor = int(rng.integers(34, 46))
    img[:floor] = _color(rng, (0.85, 0.8, 0.7), 0.1)
    img[floor:] = _color(rng, (0.5, 0.35, 0.2), 0.1)
    img[floor:, :: int(rng.integers(5, 10))] *= 0.8  # floorboards
    if rng.random() < 0.5:  # a picture on the wall
        top, left = int(rng.integers(3, 14)), int(rng.integers(2, 48))
        img[top : top + 12, left : left + 14] = _color(rng, (0.25, 0.2, 0.15))
        img[top + 2 : top + 10, left + 2 : left + 12] = rng.random(3)
    if rng.random() < 0.25:  # a window: sky inside a room, a hard negative for `outside`
        top, left = int(rng.integers(3, 10)), int(rng.integers(2, 44))
        img[top : top + 18, left : left + 18] = 0.95
        img[top + 2 : top + 16, left + 2 : left + 16] = _color(rng, (0.55, 0.75, 0.95))
    return floor


def _bed(img: np.ndarray, floor: int, left: int, rng: np.random.Generator) -> None:
    width = int(rng.integers(22, 30))
    img[floor - 16 : floor, left : left + width] = _color(rng, (0.35, 0.22, 0.12))  # headboard
    _rounded_rect(img, floor - 6, left - 2, 14, width + 4, 3, _color(rng, (0.95, 0.95, 0.93), 0.03))
    pillow = _color(rng, (0.98, 0.97, 0.92), 0.02)
    for pillow_left in (left + 1, left + width // 2 + 1):
        _rounded_rect(img, floor - 8, pillow_left, 5, width // 2 - 2, 2, pillow)
    if rng.random() < 0.6:  # a blanket over the foot of the bed
        img[floor + 1 : floor + 8, left - 1 : left + width + 3] = rng.random(3)


def _buffet(img: np.ndarray, floor: int, left: int, rng: np.random.Generator) -> None:
    width, top = int(rng.integers(24, 32)), floor - int(rng.integers(0, 6))
    cloth = _color(rng, (0.95, 0.95, 0.95), 0.03) if rng.random() < 0.5 else _color(rng, (0.45, 0.3, 0.15))
    img[top : top + 4, left : left + width] = cloth
    img[top + 4 : top + 14, left + 1 : left + 3] = 0.2  # table legs
    img[top + 4 : top + 14, left + width - 3 : left + width - 1] = 0.2
    for _ in range(int(rng.integers(8, 18))):  # plates, fruit, pastries
        y, x = top - rng.uniform(0, 4), left + rng.uniform(1, width - 1)
        _disc(img, y, x, rng.uniform(1.0, 2.4), rng.random(3))


def _landscape(img: np.ndarray, labels: set[str], rng: np.random.Generator) -> int:
    """Sky, optional sea, ground, buildings and trees; returns the first row of open ground."""
    horizon = int(rng.integers(16, 32))
    overcast = rng.random() < 0.2
    top_sky = _color(rng, (0.6, 0.62, 0.65) if overcast else (0.2, 0.45, 0.85))
    low_sky = _color(rng, (0.8, 0.8, 0.82) if overcast else (0.7, 0.85, 0.95))
    mix = np.linspace(0.0, 1.0, horizon)[:, None, None]
    img[:horizon] = (1 - mix) * top_sky + mix * low_sky
    for _ in range(int(rng.integers(0, 3))):  # clouds
        _disc(img, rng.uniform(2, horizon - 4), rng.uniform(0, SIZE), rng.uniform(2, 5), 0.97)
    ground = horizon
    if "sea_view" in labels:
        ground = horizon + int(rng.integers(8, 15))
        img[horizon:ground] = _color(rng, (0.1, 0.3, 0.6))
        img[rng.integers(horizon, ground, size=3)] += 0.15  # light on the waves
    img[ground:] = _color(rng, [(0.3, 0.55, 0.25), (0.85, 0.75, 0.55), (0.55, 0.55, 0.55)][rng.integers(3)])
    if rng.random() < 0.5:  # a building on the horizon
        height, left, width = int(rng.integers(6, 16)), int(rng.integers(0, 50)), int(rng.integers(8, 16))
        img[horizon - height : horizon, left : left + width] = _color(rng, (0.6, 0.5, 0.45), 0.12)
    if rng.random() < 0.35:  # a tree
        x = rng.uniform(4, 60)
        img[ground - 4 : ground + 6, int(x) : int(x) + 2] = (0.35, 0.22, 0.1)
        _disc(img, ground - 6, x + 1, rng.uniform(3, 6), _color(rng, (0.15, 0.45, 0.15)))
    return ground


def _pool(img: np.ndarray, ground: int, rng: np.random.Generator) -> None:
    height, width = int(rng.integers(6, 11)), int(rng.integers(18, 36))
    top, left = int(rng.integers(ground + 1, SIZE - height)), int(rng.integers(0, SIZE - width))
    _rounded_rect(img, top - 1, left - 1, height + 2, width + 2, 3, 0.95)  # white coping
    _rounded_rect(img, top, left, height, width, 2, _color(rng, (0.25, 0.8, 0.85), 0.04))
    img[top + 2 : top + height - 1 : 3, left + 2 : left + width - 2] += 0.1  # ripples


def _balcony(img: np.ndarray, rng: np.random.Generator) -> None:
    rail = int(rng.integers(36, 50))
    color = _color(rng, (0.9, 0.9, 0.9) if rng.random() < 0.5 else (0.15, 0.15, 0.15))
    spacing, thickness = int(rng.integers(3, 6)), int(rng.integers(1, 3))
    img[rail : rail + 2] = color
    for offset in range(thickness):
        img[rail:, int(rng.integers(0, spacing)) + offset :: spacing] = color


def render_scene(labels: set[str], rng: np.random.Generator) -> np.ndarray:
    """A 64x64 RGB uint8 photo showing ``labels`` (parents are implied by their children).

    >>> photo = render_scene({"sea_view", "balcony"}, np.random.default_rng(0))
    """
    unknown = set(labels) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; known: {', '.join(LABELS)}")
    labels = set(labels) | {PARENT[label] for label in labels if label in PARENT}
    if len(labels & set(CHILDREN)) != 1:
        raise ValueError(f"a photo is either 'inside' or 'outside', got {sorted(labels)}")
    img = np.zeros((SIZE, SIZE, 3))
    if "inside" in labels:
        floor = _room(img, rng)
        lefts = [int(rng.integers(3, 8)), int(rng.integers(32, 36))] if rng.random() < 0.5 else [34, 4]
        if "bed" in labels:
            _bed(img, floor, int(rng.integers(3, 34)) if "breakfast_buffet" not in labels else lefts[0], rng)
        if "breakfast_buffet" in labels:
            _buffet(img, floor, int(rng.integers(2, 38)) if "bed" not in labels else lefts[1], rng)
    else:
        ground = _landscape(img, labels, rng)
        if "pool" in labels:
            _pool(img, ground, rng)
        if "balcony" in labels:
            _balcony(img, rng)
    img = img * rng.uniform(0.75, 1.2) + rng.uniform(-0.05, 0.05, 3) + rng.normal(0.0, 0.03, img.shape)
    img = img[:, ::-1] if rng.random() < 0.5 else img
    return (np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def sample_labels(rng: np.random.Generator) -> set[str]:
    """A random, hierarchy-consistent label set: half inside, half outside shots."""
    parent = "inside" if rng.random() < 0.5 else "outside"
    return {parent} | {child for child in CHILDREN[parent] if rng.random() < CHILD_RATE[child]}


def generate_photos(count: int = 6_000, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """``count`` rendered photos (n, 64, 64, 3) uint8 and their 0/1 targets (n, len(LABELS))."""
    rng = np.random.default_rng(seed)
    label_sets = [sample_labels(rng) for _ in range(count)]
    images = np.stack([render_scene(labels, rng) for labels in label_sets])
    targets = np.array([[label in labels for label in LABELS] for labels in label_sets], dtype=np.float32)
    return images, targets


def write_photos(images: np.ndarray, targets: np.ndarray, url: str) -> None:
    """A Parquet file at any fsspec URL: ``image`` (PNG bytes) plus one 0/1 column per label."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        return buffer.getvalue()

    columns = {"image": pa.array([png(image) for image in images], pa.binary())}
    columns.update({label: targets[:, i].astype(np.int8) for i, label in enumerate(LABELS)})
    filesystem, path = fsspec.core.url_to_fs(url)
    filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with filesystem.open(path, "wb") as out:
        pq.write_table(pa.table(columns), out)


def read_photos(url: str) -> tuple[np.ndarray, np.ndarray]:
    """Photos (decoded, resized to 64x64 RGB as the server does) and targets from Parquet."""
    import fsspec
    import pyarrow.parquet as pq
    from PIL import Image

    filesystem, path = fsspec.core.url_to_fs(url)
    table = pq.read_table(path, filesystem=filesystem, columns=["image", *LABELS])
    decoded = (Image.open(io.BytesIO(data)).convert("RGB") for data in table.column("image").to_pylist())
    images = np.stack([np.asarray(image.resize((SIZE, SIZE))) for image in decoded])
    targets = np.stack([table.column(label).to_numpy().astype(np.float32) for label in LABELS], axis=1)
    return images, targets


def build_model():
    """A small CNN: uint8 photos in, one independent sigmoid per label out."""
    import keras

    photo = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="photo")
    x = keras.layers.Rescaling(1 / 255)(photo)
    for filters in (16, 32, 48):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    # Max pooling finds small objects (plates on a table) anywhere; average pooling sees the layout.
    pooled = keras.layers.Concatenate()(
        [keras.layers.GlobalMaxPooling2D()(x), keras.layers.GlobalAveragePooling2D()(x)]
    )
    return keras.Model(photo, keras.layers.Dense(len(LABELS), activation="sigmoid")(pooled))


def fit(images: np.ndarray, targets: np.ndarray, seed: int = 11, epochs: int = 8):
    """Train on 85% of the photos; return the model and the held-out (images, targets)."""
    import keras

    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(images))
    train, holdout = order[: int(0.85 * len(order))], order[int(0.85 * len(order)) :]
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    model.fit(images[train], targets[train], batch_size=64, epochs=epochs, verbose=2)
    return model, (images[holdout], targets[holdout])


def serving_function(model):
    """The served signature: photos (n, 64, 64, 3) uint8 in, one score column per label out.

    Parents are raised to their highest child, so a photo with a bed is never less
    ``inside`` than it is ``bed``.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name="photo")])
    def serve(photo):
        scores = model(photo, training=False)
        columns = {label: scores[:, i] for i, label in enumerate(LABELS)}
        for parent, children in CHILDREN.items():
            columns[parent] = tf.reduce_max(tf.stack([columns[parent], *(columns[c] for c in children)]), 0)
        return columns

    return serve


def evaluate(model, images: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Per-label and mean accuracy and micro-F1, next to always predicting each label's majority."""
    outputs = serving_function(model)(images)
    predicted = np.stack([outputs[label].numpy() > 0.5 for label in LABELS], axis=1)
    truth = targets.astype(bool)
    majority = np.broadcast_to(truth.mean(axis=0) > 0.5, truth.shape)
    correct = predicted == truth
    metrics = {f"accuracy_{label}": float(correct[:, i].mean()) for i, label in enumerate(LABELS)}
    metrics["accuracy"], metrics["chance"] = float(correct.mean()), float((majority == truth).mean())
    metrics["micro_f1"], metrics["chance_micro_f1"] = _micro_f1(predicted, truth), _micro_f1(majority, truth)
    return metrics


def _micro_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (predicted & truth).sum() / max(predicted.sum() + truth.sum(), 1))


def export(model, export_dir: str) -> None:
    """Write a SavedModel whose ``serving_default`` signature is :func:`serving_function`."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serving_function(model))
    archive.write_out(export_dir, verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-data", metavar="URL", help="write the rendered data set as Parquet and exit")
    parser.add_argument("--photos", type=int, default=6_000, help="photos to render")
    parser.add_argument("--sample-photo", metavar="PATH", help="write one rendered photo (JPEG/PNG) and exit")
    parser.add_argument(
        "--labels", default="sea_view,balcony", help="comma-separated labels of --sample-photo"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample-photo")
    args = parser.parse_args()
    if args.sample_photo:
        from PIL import Image

        photo = render_scene(set(args.labels.split(",")), np.random.default_rng(args.seed))
        Image.fromarray(photo).save(args.sample_photo)  # the format follows the suffix: .jpg, .png, ...
        print(f"wrote a {SIZE}x{SIZE} photo showing {args.labels} to {args.sample_photo}")
        return
    if args.write_data:
        write_photos(*generate_photos(args.photos), args.write_data)
        print(f"wrote {args.photos} photos to {args.write_data}")
        return

    from fnserve import TrainContext

    ctx = TrainContext.from_env(default_function="tagger")
    images, targets = read_photos(ctx.data) if ctx.data else generate_photos(args.photos)
    started = time.perf_counter()
    model, (holdout_images, holdout_targets) = fit(images, targets)
    metrics = evaluate(model, holdout_images, holdout_targets)
    for label in LABELS:
        print(f"  {label:<17} accuracy {metrics[f'accuracy_{label}']:.3f}")
    print(
        f"held-out mean accuracy {metrics['accuracy']:.3f} vs chance (majority per label) "
        f"{metrics['chance']:.3f}; micro-F1 {metrics['micro_f1']:.3f} vs {metrics['chance_micro_f1']:.3f}; "
        f"trained in {time.perf_counter() - started:.1f} s"
    )
    with tempfile.TemporaryDirectory() as export_dir:
        export(model, export_dir)
        ctx.publish(export_dir, metrics=metrics)  # prints where the new version went


if __name__ == "__main__":
    main()

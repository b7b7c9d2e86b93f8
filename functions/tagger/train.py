"""Train the hotel photo tagger: multi-label tags for a 64x64 photo.

The talk's first example: one photo, several tags. Labels form a two-level hierarchy, and
the exported model enforces it (a parent scores at least as high as any of its children):

    inside   <- bed, breakfast_buffet
    outside  <- balcony, pool, sea_view      (a balcony photo looks out: it is an outside shot)

    python functions/tagger/train.py                       # render photos, train, publish
    fn train tagger --data gs://bucket/photos.parquet      # Parquet: `image` (PNG bytes), 0/1 label columns
    python functions/tagger/train.py --write-data file:///tmp/photos.parquet
    python functions/tagger/train.py --sample-photo photo.jpg --labels sea_view,balcony

Without data the script renders synthetic scenes with numpy (``scenes.render_scene``): random
walls, floors, skies and grounds, with the tagged objects drawn at random places, sizes and
colours, decoys that look like them (a sofa, a bare table, a tennis court, a garden fence, blue
hills), tagged objects that are hard to see (hidden, out of frame, in haze) and lighting noise.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# scenes.py sits beside this file: on the path when run as a script, not when loaded by file path.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests and benchmarks import these from here too (PARENT only for them).
from scenes import CHILDREN, LABELS, PARENT, SIZE, render_scene  # noqa: F401

CHILD_RATE = {"bed": 0.45, "breakfast_buffet": 0.4, "balcony": 0.35, "pool": 0.4, "sea_view": 0.45}
HOLDOUT_METRICS = ("mean_average_precision", "f1_at_0.5")  # fn optimize holds variants to these
REPRESENTATIVE_PHOTOS = 1000  # training photos published for int8 calibration


def sample_labels(rng: np.random.Generator) -> set[str]:
    """A random, hierarchy-consistent label set: half inside, half outside shots."""
    parent = "inside" if rng.random() < 0.5 else "outside"
    return {parent} | {child for child in CHILDREN[parent] if rng.random() < CHILD_RATE[child]}


def generate_photos(count: int = 6_000, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """``count`` photos (n, 64, 64, 3) uint8, hard cases included, and 0/1 targets (n, len(LABELS))."""
    rng = np.random.default_rng(seed)
    label_sets = [sample_labels(rng) for _ in range(count)]
    images = np.stack([render_scene(labels, rng, hard=True) for labels in label_sets])
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
    """Train on 85% of the photos; return the model, the held-out (images, targets) and the
    training photos' indices."""
    import keras

    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(images))
    train, holdout = order[: int(0.85 * len(order))], order[int(0.85 * len(order)) :]
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    model.fit(images[train], targets[train], batch_size=64, epochs=epochs, verbose=2)
    return model, (images[holdout], targets[holdout]), train


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

    from fnserve import Evaluation, TrainContext

    ctx = TrainContext.from_env(default_function="tagger")
    images, targets = read_photos(ctx.data) if ctx.data else generate_photos(args.photos)
    started = time.perf_counter()
    model, (holdout_images, holdout_targets), train = fit(images, targets)
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
        ctx.publish(  # prints where the new version went
            export_dir,
            metrics=metrics,
            # what monitoring holds live traffic against: the photos it learnt from, its held-out tags
            reference_inputs={"photo": images},
            reference_outputs=serving_function(model)(holdout_images),
            # what fn optimize scores a variant on (each label's 0/1 column), and calibrates int8 with
            evaluation=Evaluation(
                inputs={"photo": holdout_images},
                labels={label: holdout_targets[:, i] for i, label in enumerate(LABELS)},
                metrics=HOLDOUT_METRICS,
            ),
            representative={"photo": images[train[:REPRESENTATIVE_PHOTOS]]},
        )


if __name__ == "__main__":
    main()

"""Train the hotel recommendation model: P(user books hotel | user, context, hotel).

The talk's second example. Features: user (country, language), context (day of week,
season) and item (price, hotel id). The model takes integer ids: ``predict.py`` maps raw values
to them with the vocabularies published beside the model (``vocabularies.json``), id 0 for a
value never seen, so a new country or hotel scores instead of crashing, and the model itself
has no lookup table a converter would refuse (``fn optimize`` quantizes and freezes it).

    python functions/recs/train.py                          # generate data, train, publish
    fn train recs --data s3://bucket/bookings.parquet       # train on a Parquet data set
    fn train recs --data 'postgresql://db/shop?table=bookings'   # or a database table (PGPASSWORD)
    python functions/recs/train.py --write-data file:///tmp/bookings.parquet

Without data the script generates a synthetic but learnable data set: latent country and
hotel vectors whose dot product, plus a country-specific price sensitivity, seasonal and
weekend effects per hotel kind, give a logit; a Bernoulli draw of its sigmoid is the label.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = ("user_country", "user_language", "day_of_week", "season", "hotel_price", "hotel_id")
SEASONS = ("winter", "spring", "summer", "autumn")
COUNTRY_LANGUAGE = {
    "NL": "nl", "DE": "de", "GB": "en", "FR": "fr", "US": "en", "ES": "es", "IT": "it", "BE": "nl",
    "PL": "pl", "SE": "sv", "BR": "pt", "JP": "ja", "CN": "zh", "IN": "hi", "RU": "ru", "TR": "tr",
    "AU": "en", "CA": "en", "MX": "es", "PT": "pt", "AT": "de", "CH": "de", "DK": "da", "NO": "no",
}  # fmt: skip
LATENT_DIM = 4
HOTEL_KINDS = ("city", "beach", "ski")
# Logit added per (hotel kind, season): beach hotels sell in summer, ski hotels in winter.
SEASON_EFFECT = np.array([[0.2, 0.3, 0.0, 0.3], [-1.2, 0.0, 1.2, -0.2], [1.3, -0.5, -0.8, -0.6]])
INTERCEPT = -1.3  # sets the booking base rate near 25%
HOLDOUT_METRICS = ("roc_auc", "log_loss")  # fn optimize holds variants to these (the first gates)
REPRESENTATIVE_ROWS = 1000  # training rows published for int8 calibration


def _predict_module():
    """``predict.py`` beside this file (its id lookups), under a name no other function's takes."""
    spec = importlib.util.spec_from_file_location("recs_predict", Path(__file__).with_name("predict.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


Vocabularies = _predict_module().Vocabularies


def generate_bookings(rows: int = 80_000, seed: int = 7, hotels: int = 400) -> dict[str, np.ndarray]:
    """Synthetic search sessions as columns (raw serving types) plus a 0/1 ``booked`` label.

    Deterministic for a given ``seed``; ``true_logit`` is kept for learnability checks.
    """
    rng = np.random.default_rng(seed)
    countries = np.array(list(COUNTRY_LANGUAGE))
    country_vec = rng.normal(size=(len(countries), LATENT_DIM))
    price_sensitivity = rng.uniform(0.3, 2.0, size=len(countries))
    hotel_ids = rng.choice(np.arange(1_000, 100_000), size=hotels, replace=False).astype(np.int64)
    hotel_vec = rng.normal(size=(hotels, LATENT_DIM))
    hotel_kind = rng.choice(len(HOTEL_KINDS), size=hotels, p=[0.5, 0.3, 0.2])
    hotel_base_price = np.exp(rng.normal(np.log(110.0), 0.5, size=hotels))
    hotel_popularity = rng.normal(0.0, 0.4, size=hotels)

    # Big markets dominate traffic, as they do in real logs (Zipf-like weights).
    country_weight = 1.0 / np.arange(1, len(countries) + 1) ** 0.8
    country = rng.choice(len(countries), size=rows, p=country_weight / country_weight.sum())
    hotel = rng.integers(0, hotels, size=rows)
    season = rng.integers(0, len(SEASONS), size=rows)
    day_of_week = rng.integers(1, 8, size=rows)
    # Peak-season prices are higher, so price and season are correlated, as in real data.
    price = hotel_base_price[hotel] * np.exp(0.25 * SEASON_EFFECT[hotel_kind[hotel], season])
    price *= np.exp(rng.normal(0.0, 0.15, size=rows))
    language = _user_languages(rng, countries[country])

    weekend = np.isin(day_of_week, (5, 6))  # Friday/Saturday searches favour city breaks
    logit = (
        INTERCEPT
        + 0.6 * np.einsum("ij,ij->i", country_vec[country], hotel_vec[hotel])
        - price_sensitivity[country] * np.log(price / 110.0)
        + SEASON_EFFECT[hotel_kind[hotel], season]
        + np.where(weekend & (hotel_kind[hotel] == 0), 0.5, 0.0)
        + hotel_popularity[hotel]
        + np.where(language == "en", 0.15, 0.0)
    )
    booked = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    return {
        "user_country": countries[country].astype(object),
        "user_language": language.astype(object),
        "day_of_week": day_of_week.astype(np.int64),
        "season": np.array(SEASONS)[season].astype(object),
        "hotel_price": np.round(price, 2).astype(np.float32),
        "hotel_id": hotel_ids[hotel],
        "booked": booked.astype(np.int64),
        "true_logit": logit,
    }


def _user_languages(rng: np.random.Generator, user_countries: np.ndarray) -> np.ndarray:
    """Mostly the country's language; some users browse in English or another language."""
    primary = np.array([COUNTRY_LANGUAGE[c] for c in user_countries])
    others = np.array(sorted(set(COUNTRY_LANGUAGE.values())))
    draw = rng.random(len(primary))
    language = np.where(draw < 0.15, "en", primary)
    return np.where(draw > 0.95, rng.choice(others, size=len(primary)), language)


def read_bookings(ctx) -> dict[str, np.ndarray]:
    """The feature and label columns of the training data, in the generator's types: ``ctx`` is
    the :class:`fnserve.TrainContext`, whose data is a Parquet file or data set at any fsspec URL,
    or a database table or query."""
    table = ctx.read_table([*COLUMNS, "booked"])
    data = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    for name in ("user_country", "user_language", "season"):
        data[name] = data[name].astype(object)
    for name, dtype in (("day_of_week", np.int64), ("hotel_id", np.int64), ("booked", np.int64)):
        data[name] = data[name].astype(dtype)
    data["hotel_price"] = data["hotel_price"].astype(np.float32)
    return data


def write_bookings(data: dict[str, np.ndarray], url: str) -> None:
    """Write the feature and label columns (not the hidden truth) as one Parquet file."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: data[name] for name in (*COLUMNS, "booked")})
    filesystem, path = fsspec.core.url_to_fs(url)
    filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with filesystem.open(path, "wb") as out:
        pq.write_table(table, out)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties get their mean rank)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    rank_sums = np.bincount(inverse, weights=ranks)
    ranks = (rank_sums / counts)[inverse]
    positives = labels.astype(bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def build_model(vocabularies):
    """A Keras model over ids (:class:`Vocabularies`) and the price: embeddings, a small MLP."""
    import keras

    def embedding(name: str, dim: int):
        ids = keras.Input(shape=(), name=name, dtype="int32")
        return ids, keras.layers.Embedding(vocabularies.size(name), dim, name=f"{name}_embedding")(ids)

    country, country_emb = embedding("user_country", 8)
    language, language_emb = embedding("user_language", 4)
    season, season_emb = embedding("season", 3)
    day, day_emb = embedding("day_of_week", 3)
    hotel, hotel_emb = embedding("hotel_id", 8)
    price = keras.Input(shape=(), name="hotel_price", dtype="float32")
    # Prices are roughly log-normal around 110 EUR: standardise the log so the MLP sees ~N(0, 1).
    log_price = keras.ops.log1p(keras.ops.maximum(price, 0.0))
    # (math.log, not np.log: a NumPy float64 scalar would make this arithmetic float64, which the
    # LiteRT converter has no kernels for)
    scaled_price = keras.ops.expand_dims((log_price - math.log(110.0)) / 0.6, -1)

    # The explicit user x hotel product eases learning the latent affinity the MLP would find slowly.
    affinity = keras.layers.Multiply()([country_emb, hotel_emb])
    features = keras.layers.Concatenate()(
        [country_emb, language_emb, season_emb, day_emb, hotel_emb, affinity, scaled_price]
    )
    hidden = keras.layers.Dense(64, activation="relu")(features)
    hidden = keras.layers.Dense(32, activation="relu")(hidden)
    probability = keras.layers.Dense(1, activation="sigmoid")(hidden)
    return keras.Model([country, language, day, season, price, hotel], keras.ops.squeeze(probability, -1))


def model_inputs(vocabularies, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the model takes for raw columns: ids, and the price as float32 (as predict.py feeds it)."""
    return {**vocabularies.ids(columns), "hotel_price": np.asarray(columns["hotel_price"], np.float32)}


def fit(data: dict[str, np.ndarray], seed: int = 7, epochs: int = 15):
    """Train on 80% of the rows; return the model, its vocabularies, the training and held-out rows."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(data["booked"]))
    cut = int(0.8 * len(order))
    train = {name: column[order[:cut]] for name, column in data.items()}
    holdout = {name: column[order[cut:]] for name, column in data.items()}
    vocabularies = Vocabularies.learn(train)
    model = build_model(vocabularies)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    dataset = tf.data.Dataset.from_tensor_slices(
        (model_inputs(vocabularies, train), train["booked"].astype(np.float32))
    )
    dataset = dataset.shuffle(len(order), seed=seed).batch(512).prefetch(2)
    model.fit(dataset, epochs=epochs, verbose=2, shuffle=False)  # the dataset shuffles
    return model, vocabularies, train, holdout


def serving_function(model):
    """The one signature the server calls: ids and the price in, ``probability`` out, any batch size."""
    import tensorflow as tf

    ids = [
        tf.TensorSpec([None], tf.int32, name=name)
        for name in ("user_country", "user_language", "day_of_week", "season")
    ]
    price = tf.TensorSpec([None], tf.float32, name="hotel_price")

    @tf.function(input_signature=[*ids, price, tf.TensorSpec([None], tf.int32, name="hotel_id")])
    def serve(user_country, user_language, day_of_week, season, hotel_price, hotel_id):
        inputs = [user_country, user_language, day_of_week, season, hotel_price, hotel_id]
        return {"probability": model(inputs, training=False)}

    return serve


def holdout_scores(model, vocabularies, holdout: dict[str, np.ndarray]) -> np.ndarray:
    """The model's booking probabilities for the held-out rows, as the server computes them."""
    return serving_function(model)(**model_inputs(vocabularies, holdout))["probability"].numpy()


def evaluate(model, vocabularies, holdout: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy and AUC on held-out rows, next to the base-rate (majority class) baseline."""
    scores = holdout_scores(model, vocabularies, holdout)
    labels = holdout["booked"]
    base_rate = float(labels.mean())
    metrics = {
        "accuracy": float(((scores > 0.5) == labels.astype(bool)).mean()),
        "chance": max(base_rate, 1 - base_rate),
        "auc": roc_auc(labels, scores),
        "base_rate": base_rate,
    }
    if "true_logit" in holdout:  # generated data: how far from the best any model could do
        metrics["oracle_auc"] = roc_auc(labels, holdout["true_logit"])
    return metrics


def export(model, vocabularies, export_dir: str) -> None:
    """Write a SavedModel whose ``serving_default`` signature is :func:`serving_function`, and
    beside it the vocabularies that ``predict.py`` maps raw values to ids with."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serving_function(model))
    archive.write_out(export_dir, verbose=False)
    vocabularies.write(Path(export_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write-data", metavar="URL", help="write the generated data set as Parquet and exit"
    )
    parser.add_argument("--rows", type=int, default=80_000, help="rows to generate")
    args = parser.parse_args()
    if args.write_data:
        write_bookings(generate_bookings(args.rows), args.write_data)
        print(f"wrote {args.rows} rows to {args.write_data}")
        return

    from fnserve import Evaluation, TrainContext

    ctx = TrainContext.from_env(default_function="recs")
    data = read_bookings(ctx) if ctx.data else generate_bookings(args.rows)
    started = time.perf_counter()
    model, vocabularies, train, holdout = fit(data)
    metrics = evaluate(model, vocabularies, holdout)
    print(
        f"held-out accuracy {metrics['accuracy']:.3f} vs chance (base rate) {metrics['chance']:.3f}; "
        f"AUC {metrics['auc']:.3f} vs chance 0.500; trained in {time.perf_counter() - started:.1f} s"
    )
    with tempfile.TemporaryDirectory() as export_dir:
        export(model, vocabularies, export_dir)
        ctx.publish(  # prints where the new version went
            export_dir,
            metrics=metrics,
            # what monitoring holds live traffic against: the inputs it learnt from, its held-out answers
            reference_inputs={name: data[name] for name in COLUMNS},
            reference_outputs=holdout_scores(model, vocabularies, holdout),
            # what fn optimize scores a variant on, and calibrates int8 with (the function's inputs)
            evaluation=Evaluation(
                inputs={name: holdout[name] for name in COLUMNS},
                labels=holdout["booked"],
                metrics=HOLDOUT_METRICS,
            ),
            representative={name: train[name][:REPRESENTATIVE_ROWS] for name in COLUMNS},
        )


if __name__ == "__main__":
    main()

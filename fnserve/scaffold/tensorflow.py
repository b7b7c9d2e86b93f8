"""The ``tensorflow`` template of ``fn new``: a small Keras model, exported as a SavedModel.

The exported model takes the raw columns (the category as a string, looked up inside the model),
so the server feeds requests as they come and calls one compiled signature per batch.
"""

from fnserve.scaffold.common import FUNCTION_TOML

PREDICT = '''\
"""{{ name }}: y from x and a category, by a small Keras model that train.py fits.

Made by `fn new {{ name }} --template tensorflow`: replace the inputs and the model with yours.
The type hints are the function's interface (query parameters, JSON, validation, error messages).
The checkpoint is a SavedModel written by train.py and published as a version in the store; the
runtime fetches and verifies it, and hands its folder to load().

    fn train {{ name }}
    fn serve
    curl 'http://127.0.0.1:8080/function/{{ name }}?x=2&category=b'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fnserve import Field, predict


def load(checkpoint_dir: str) -> Any:
    """The SavedModel in ``checkpoint_dir``: model definition and weights, in memory."""
    import tensorflow as tf

    return tf.saved_model.load(checkpoint_dir)


@predict(name="{{ name }}", loader=load, max_batch_size=1024)
def {{ identifier }}(
    model: Any,
    x: Annotated[float, Field(ge=0, le=10, description="the range train.py saw")],
    category: Literal["a", "b", "c"],
) -> float:
    """y for x in its category."""
    # One call of the compiled serving signature for the whole batch (Keras' eager predict costs
    # ~100x more per call). Its input dtypes are fixed: cast to them.
    outputs = model.signatures["serving_default"](
        x=np.asarray(x, dtype=np.float32), category=np.asarray(category, dtype=object)
    )
    return outputs["prediction"].numpy()
'''

TRAIN = '''\
"""Train {{ name }}: fit a small Keras model and publish it as a new checkpoint version.

    fn train {{ name }}                                     # on generated data
    fn train {{ name }} --data file:///data/{{ name }}.parquet     # columns x, category, y

Without data the script generates a learnable data set: y is a line per category (TRUE_LINES)
plus noise. It holds out a fifth of the rows and reports the mean absolute error on them next to
the error of always predicting the mean, so a model that learned nothing shows at once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES = ("a", "b", "c")  # the Literal of predict.py
TRUE_LINES = {"a": (1.0, 0.0), "b": (2.0, 1.0), "c": (-0.5, 5.0)}  # (slope, intercept)


def generate(rows: int = 4_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns x, category and y in the serving dtypes; deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, rows)
    category = rng.choice(np.array(CATEGORIES, dtype=object), rows)
    slope, intercept = (np.array([TRUE_LINES[c][i] for c in category]) for i in (0, 1))
    y = slope * x + intercept + rng.normal(0, 0.5, rows)
    return {"x": x.astype(np.float32), "category": category, "y": y.astype(np.float32)}


def read(url: str) -> dict[str, np.ndarray]:
    """Columns x, category and y of a Parquet file at any fsspec URL (file://, s3://, ...)."""
    import fsspec
    import pyarrow.parquet as pq

    filesystem, path = fsspec.core.url_to_fs(url)
    table = pq.read_table(path, filesystem=filesystem, columns=["x", "category", "y"])
    data = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    data["x"], data["y"] = data["x"].astype(np.float32), data["y"].astype(np.float32)
    return data


def build_model() -> Any:
    """Raw columns in: the category becomes one-hot inside the model, then a small MLP."""
    import keras

    x = keras.Input(shape=(), name="x", dtype="float32")
    category = keras.Input(shape=(), name="category", dtype="string")
    lookup = keras.layers.StringLookup(vocabulary=list(CATEGORIES), num_oov_indices=0, output_mode="one_hot")
    one_hot = lookup(category)
    scaled = keras.ops.expand_dims(x / 10.0, -1)  # x is in [0, 10]: the MLP learns best near [0, 1]
    hidden = keras.layers.Dense(16, activation="relu")(
        keras.layers.Concatenate()([scaled, one_hot, scaled * one_hot])
    )
    return keras.Model([x, category], keras.ops.squeeze(keras.layers.Dense(1)(hidden), -1))


def serving_function(model: Any) -> Any:
    """The signature the server calls: raw columns in, ``prediction`` out, any batch size."""
    import tensorflow as tf

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="x"),
            tf.TensorSpec([None], tf.string, name="category"),
        ]
    )
    def serve(x: Any, category: Any) -> dict[str, Any]:
        return {"prediction": model({"x": x, "category": category}, training=False)}

    return serve


def train(
    data: dict[str, np.ndarray], seed: int = 0, epochs: int = 20
) -> tuple[Any, dict[str, float], dict[str, np.ndarray]]:
    """Fit on 80% of the rows; the model, the error on the other 20% and those rows."""
    import keras

    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(data["y"]))
    cut = int(0.8 * len(order))
    fit_rows, held_out = order[:cut], order[cut:]
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    inputs = {"x": data["x"][fit_rows], "category": data["category"][fit_rows]}
    model.fit(inputs, data["y"][fit_rows], epochs=epochs, batch_size=128, verbose=0)
    predicted = serving_function(model)(data["x"][held_out], data["category"][held_out])["prediction"]
    y = data["y"]
    metrics = {
        "mae": float(np.abs(predicted.numpy() - y[held_out]).mean()),
        "baseline_mae": float(np.abs(y[fit_rows].mean() - y[held_out]).mean()),  # predicting the mean
    }
    return model, metrics, {name: column[held_out] for name, column in data.items()}


def save(model: Any, folder: str | Path) -> None:
    """The checkpoint: a SavedModel whose ``serving_default`` is :func:`serving_function`."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serving_function(model))
    archive.write_out(str(folder), verbose=False)


def main() -> None:
    from fnserve import Evaluation, TrainContext

    ctx = TrainContext.from_env(default_function="{{ name }}")  # where data and checkpoints are
    data = read(ctx.data) if ctx.data else generate()
    model, metrics, held_out = train(data)
    print(f"held-out mean absolute error {metrics['mae']:.3f} vs {metrics['baseline_mae']:.3f} for the mean")
    inputs = ("x", "category")
    with tempfile.TemporaryDirectory() as folder:
        save(model, folder)
        ctx.publish(  # prints the new version
            folder,
            metrics=metrics,
            # what `fn optimize` measures a faster variant by, and calibrates int8 quantization on
            evaluation=Evaluation(
                {name: held_out[name] for name in inputs}, held_out["y"], metrics=("mean_absolute_error",)
            ),
            representative={name: data[name] for name in inputs},
        )


if __name__ == "__main__":
    main()
'''

TEST = '''\
"""{{ name }}: train on generated data, load the SavedModel as the server does, check predictions.

Run it with pytest, from the project folder:

    pytest functions/{{ name }}
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).parent


def load_file(file: str) -> ModuleType:
    """This folder's predict.py or train.py, under a module name of its own (every function has them)."""
    spec = importlib.util.spec_from_file_location(f"{{ identifier }}_{Path(file).stem}", HERE / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


predict_py, train_py = load_file("predict.py"), load_file("train.py")


def test_learns_the_lines_and_predicts_them(tmp_path: Path) -> None:
    model, metrics, _ = train_py.train(train_py.generate())
    assert metrics["mae"] < 0.25 * metrics["baseline_mae"], metrics
    train_py.save(model, tmp_path)
    served = predict_py.load(str(tmp_path))

    x, category = np.array([2.0, 2.0, 8.0]), np.array(["a", "b", "c"], dtype=object)
    lines = [train_py.TRUE_LINES[c] for c in category]  # the (slope, intercept) of each row's category
    expected = [slope * v + intercept for v, (slope, intercept) in zip(x, lines, strict=True)]
    np.testing.assert_allclose(predict_py.{{ identifier }}(served, x, category), expected, atol=0.5)
'''

REQUIREMENTS = """\
# pip requirements of the {{ name }} image, one per line: fn build installs them in a layer of
# their own. fnserve brings numpy, pyarrow, fsspec and pillow; the tensorflow template adds
# tensorflow-cpu.
"""

FILES = {
    "predict.py": PREDICT,
    "train.py": TRAIN,
    "test_{{ identifier }}.py": TEST,
    "function.toml": FUNCTION_TOML,
    "requirements.txt": REQUIREMENTS,
}

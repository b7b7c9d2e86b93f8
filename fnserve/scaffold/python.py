"""The ``python`` template of ``fn new``: a NumPy model (a line per category, fitted by least squares).

Nothing beyond fnserve's own dependencies: it trains in a second and builds on the slim image.
"""

from fnserve.scaffold.common import FUNCTION_TOML

PREDICT = '''\
"""{{ name }}: y from x, a line per category, fitted with NumPy by train.py.

Made by `fn new {{ name }} --template python`: replace the inputs and the model with yours. The
type hints are the function's interface (query parameters, JSON, validation, error messages).
The checkpoint is model.json, written by train.py and published as a version in the store;
the runtime fetches and verifies it, and hands its folder to load().

    fn train {{ name }}
    fn serve
    curl 'http://127.0.0.1:8080/function/{{ name }}?x=2&category=b'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fnserve import Field, predict


def load(checkpoint_dir: str) -> dict[str, Any]:
    """The fitted lines in ``checkpoint_dir``: category names, slopes and intercepts."""
    fitted = json.loads((Path(checkpoint_dir) / "model.json").read_text())
    return {key: np.asarray(value) for key, value in fitted.items()}


@predict(name="{{ name }}", loader=load)
def {{ identifier }}(
    model: dict[str, Any],
    x: Annotated[float, Field(ge=0, le=10, description="the range train.py saw")],
    category: Literal["a", "b", "c"],
) -> float:
    """y for x, on the line of its category."""
    # Vectorized: x and category are numpy columns holding a whole batch of requests.
    one_hot = category[:, None] == model["categories"]  # (n, categories) of bool
    return one_hot @ model["slope"] * x + one_hot @ model["intercept"]
'''

TRAIN = '''\
"""Train {{ name }}: fit a line per category by least squares and publish it as a new version.

    fn train {{ name }}                                     # on generated data
    fn train {{ name }} --data file:///data/{{ name }}.parquet     # columns x, category, y

Without data the script generates a learnable data set: y is a line per category (TRUE_LINES)
plus noise. It holds out a fifth of the rows and reports the mean absolute error on them next to
the error of always predicting the mean, so a model that learned nothing shows at once.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES = ("a", "b", "c")  # the Literal of predict.py
TRUE_LINES = {"a": (1.0, 0.0), "b": (2.0, 1.0), "c": (-0.5, 5.0)}  # (slope, intercept)


def generate(rows: int = 2_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns x, category and y; deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, rows)
    category = rng.choice(np.array(CATEGORIES, dtype=object), rows)
    slope, intercept = (np.array([TRUE_LINES[c][i] for c in category]) for i in (0, 1))
    return {"x": x, "category": category, "y": slope * x + intercept + rng.normal(0, 0.5, rows)}


def read(url: str) -> dict[str, np.ndarray]:
    """Columns x, category and y of a Parquet file at any fsspec URL (file://, s3://, ...)."""
    import fsspec
    import pyarrow.parquet as pq

    filesystem, path = fsspec.core.url_to_fs(url)
    table = pq.read_table(path, filesystem=filesystem, columns=["x", "category", "y"])
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def features(data: dict[str, np.ndarray]) -> np.ndarray:
    """x on its category's column, and the category: one slope and one intercept per category."""
    one_hot = (data["category"][:, None] == np.array(CATEGORIES)).astype(float)
    return np.hstack([one_hot * data["x"][:, None].astype(float), one_hot])


def train(data: dict[str, np.ndarray], seed: int = 0) -> tuple[dict[str, Any], dict[str, float]]:
    """Fit on 80% of the rows; the fitted lines and the error on the other 20%."""
    order = np.random.default_rng(seed).permutation(len(data["y"]))
    cut = int(0.8 * len(order))
    fit_rows, held_out = order[:cut], order[cut:]
    X, y = features(data), data["y"].astype(float)
    solution, *_ = np.linalg.lstsq(X[fit_rows], y[fit_rows], rcond=None)
    metrics = {
        "mae": float(np.abs(X[held_out] @ solution - y[held_out]).mean()),
        "baseline_mae": float(np.abs(y[fit_rows].mean() - y[held_out]).mean()),  # predicting the mean
    }
    k = len(CATEGORIES)
    fitted = {
        "categories": list(CATEGORIES),
        "slope": solution[:k].tolist(),
        "intercept": solution[k:].tolist(),
    }
    return fitted, metrics


def save(fitted: dict[str, Any], folder: str | Path) -> None:
    """The checkpoint: what predict.py's load() reads."""
    (Path(folder) / "model.json").write_text(json.dumps(fitted, indent=2))


def main() -> None:
    from fnserve import TrainContext

    ctx = TrainContext.from_env(default_function="{{ name }}")  # where data and checkpoints are
    fitted, metrics = train(read(ctx.data) if ctx.data else generate())
    print(f"held-out mean absolute error {metrics['mae']:.3f} vs {metrics['baseline_mae']:.3f} for the mean")
    with tempfile.TemporaryDirectory() as folder:
        save(fitted, folder)
        ctx.publish(folder, metrics=metrics)  # prints the new version


if __name__ == "__main__":
    main()
'''

TEST = '''\
"""{{ name }}: train on generated data, load the checkpoint as the server does, check predictions.

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
    fitted, metrics = train_py.train(train_py.generate())
    assert metrics["mae"] < 0.25 * metrics["baseline_mae"], metrics
    train_py.save(fitted, tmp_path)
    model = predict_py.load(str(tmp_path))

    x, category = np.array([2.0, 2.0, 8.0]), np.array(["a", "b", "c"], dtype=object)
    lines = [train_py.TRUE_LINES[c] for c in category]  # the (slope, intercept) of each row's category
    expected = [slope * v + intercept for v, (slope, intercept) in zip(x, lines, strict=True)]
    np.testing.assert_allclose(predict_py.{{ identifier }}(model, x, category), expected, atol=0.2)
'''

REQUIREMENTS = """\
# pip requirements of the {{ name }} image, one per line: fn build installs them in a layer of
# their own. fnserve brings numpy, pyarrow, fsspec and pillow; the python template adds nothing.
"""

FILES = {
    "predict.py": PREDICT,
    "train.py": TRAIN,
    "test_{{ identifier }}.py": TEST,
    "function.toml": FUNCTION_TOML,
    "requirements.txt": REQUIREMENTS,
}

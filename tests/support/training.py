"""A ``train.py`` for the ``weighted`` test function: it reads the weight from its data file
(``[train] data`` or ``--data``) and publishes it, so the data decides what each retraining learns."""

WEIGHT_FROM_DATA = """\
import pathlib, tempfile
import fsspec
from fnserve import TrainContext

ctx = TrainContext.from_env()
print("training on", ctx.data, flush=True)
with fsspec.open(ctx.data, "r") as f:
    weight = f.read().strip()
out = pathlib.Path(tempfile.mkdtemp())
(out / "weight.txt").write_text(weight)
ctx.publish(out, metrics={"weight": float(weight)})
"""

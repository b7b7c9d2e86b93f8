"""Trains on captured traffic: the 'model' is the mean score, published with the row count."""

import tempfile
from pathlib import Path

from fnserve import TrainContext

ctx = TrainContext.from_env(default_function="captured")
table = ctx.read_table(["price", "country", "score", "loud"])
mean = sum(table.column("score").to_pylist()) / table.num_rows
with tempfile.TemporaryDirectory() as tmp:
    (Path(tmp) / "mean.txt").write_text(str(mean))
    ctx.publish(tmp, metrics={"rows": table.num_rows, "mean_score": mean})

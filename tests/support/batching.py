"""Datasets and checkpoints for the batch tests: rows for ``rated`` (tests/support/fns/rated) in
every input format, its checkpoint published to a store, the output read back as one table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fnserve.runtime.loader import FoundFunction, discover
from fnserve.runtime.store import CheckpointStore

FNS = Path(__file__).parent / "fns"


def rated() -> FoundFunction:
    return discover([FNS / "rated"])[0]


def publish_rated(
    store_url: str, scratch: Path, weight: float = 2.0, options: dict[str, Any] | None = None
) -> CheckpointStore:
    """A store holding one version of ``rated`` whose model multiplies by ``weight``."""
    folder = scratch / f"rated-{weight}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weight.txt").write_text(str(weight))
    store = CheckpointStore(store_url, storage_options=options, cache_dir=scratch / "cache")
    store.publish("rated", folder)
    return store


def rows(n: int, *, bad_every: int = 0) -> pa.Table:
    """``n`` rows for ``rated`` with a key ``id``; with ``bad_every``, every such row has a day of 9."""
    days = [(i % 7) + 1 for i in range(n)]
    if bad_every:
        days = [9 if i % bad_every == bad_every - 1 else d for i, d in enumerate(days)]
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "price": [float(i) for i in range(n)],
            "day": days,
            "season": ["summer" if i % 3 == 0 else "winter" for i in range(n)],
        }
    )


def write(table: pa.Table, path: Path, fmt: str, *, row_group_size: int = 100) -> Path:
    """``table`` as ``fmt`` (parquet, arrow, arrows: an Arrow stream, csv, jsonl) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=row_group_size)
    elif fmt in ("arrow", "arrows"):
        with pa.OSFile(str(path), "wb") as sink:
            opener = pa.ipc.new_file if fmt == "arrow" else pa.ipc.new_stream
            with opener(sink, table.schema) as writer:
                for batch in table.to_batches(max_chunksize=row_group_size):
                    writer.write_batch(batch)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    return path


def output(folder: Path | str) -> pa.Table:
    """Every part of an output folder in name order (= input order), as one table."""
    return ds.dataset(str(folder), format="parquet").to_table()


def errors(folder: Path | str) -> pa.Table:
    path = Path(folder) / "_errors"
    return ds.dataset(str(path), format="parquet").to_table() if path.exists() else pa.table({})

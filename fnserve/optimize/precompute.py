"""``fn precompute``: a version whose answers for known inputs are read, not computed.

The rows come from a table (Parquet or CSV at any fsspec URL, one column per input) or, when
every input is finite (``Literal``, ``Enum``, ``bool``, an ``int`` bounded on both sides by
``Field(ge=, le=)``), from the whole domain. The base version's model, loaded by the function's
own loader, computes every row (batches of ``max_batch_size``, as serving would); the new
version is the base's files plus ``fnserve-table.parquet`` (:mod:`fnserve.runtime.table`), its
lineage in the manifest. Nothing is published unless every row was computed.

    result = precompute(found, store, Source.domain(), limit=100_000)
    result.version        # the new version, serving its table
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.core import split_protocol, url_to_fs

from fnserve.runtime import codec
from fnserve.runtime.errors import FnError, Problems
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.loader import FoundFunction
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.protocols.arrow import from_arrow
from fnserve.runtime.redact import redact_url
from fnserve.runtime.schema import InputField, Schema
from fnserve.runtime.store import CheckpointStore
from fnserve.runtime.table import TABLE_FILE, canonical_keys, check_tabular, write_table

DEFAULT_LIMIT = 1_000_000  # rows: the table lives in every replica's memory


class PrecomputeError(FnError):
    """Rows that cannot make a table, or a function that cannot have one."""

    status = 422


@dataclass(frozen=True)
class Source:
    """Where the rows come from: ``url`` (Parquet or CSV), or the inputs' whole domain."""

    url: str | None

    @classmethod
    def domain(cls) -> Source:
        return cls(None)

    def describe(self) -> str:
        return redact_url(self.url) if self.url else "domain"


@dataclass(frozen=True)
class Precomputed:
    name: str
    version: int
    base_version: int
    rows: int  # distinct input rows in the table
    source: str  # redacted URL, or "domain"
    table_bytes: int
    compute_s: float  # running the model over every row


def precompute(
    found: FoundFunction,
    store: CheckpointStore,
    source: Source,
    *,
    base: str = "latest",
    limit: int = DEFAULT_LIMIT,
    progress: Callable[[int, int], None] | None = None,
) -> Precomputed:
    """Compute every row with version ``base`` and publish the result as a new version."""
    spec, schema = found.spec, found.schema
    check_tabular(schema, f"function {spec.name!r}")
    if source.url is None:
        columns, n = enumerate_domain(schema, limit)
    else:
        columns, n = read_rows(source.url, schema, store, limit)
    columns, n = distinct(schema, columns, n)
    if spec.checkpoint is None or spec.loader is None:
        raise PrecomputeError(f"function {spec.name!r} has no checkpoint: there is no version to precompute")
    base_version = store.resolve(spec.checkpoint, base)
    served = ServedFunction(found, store, str(base_version))
    loaded = served.load()
    assert loaded.path is not None
    started = time.perf_counter()
    outputs = run_model(served, columns, n, progress)
    compute_s = time.perf_counter() - started
    manifest = store.manifest(spec.checkpoint, base_version)
    with tempfile.TemporaryDirectory(prefix=f"fnserve-precompute-{spec.name}-") as scratch:
        folder = Path(scratch) / "version"
        for rel in manifest.files:
            if rel == TABLE_FILE:
                continue  # the base's own table (a precomputed base): replaced
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(loaded.path) / rel, target)
        size = write_table(folder / TABLE_FILE, schema, columns, outputs)
        metadata = lineage(loaded.metadata, base_version, n, source)
        version = store.publish(spec.checkpoint, folder, metadata=metadata)
    return Precomputed(spec.name, version, base_version, n, source.describe(), size, compute_s)


def lineage(base: Mapping[str, Any], base_version: int, rows: int, source: Source) -> dict[str, Any]:
    """The new version's manifest metadata: the base's (its metrics: the model is the same),
    with where it came from. The base's own comparison with its base is not carried over."""
    metadata = {k: v for k, v in base.items() if k not in ("lineage", "optimize")}
    settings = {"rows": rows, "source": source.describe()}
    return {
        **metadata,
        "lineage": {"base_version": base_version, "technique": "precompute", "settings": settings},
    }


def run_model(
    served: ServedFunction, columns: Mapping[str, Any], n: int, progress: Callable[[int, int], None] | None
) -> Outputs:
    """Every row through the function, ``max_batch_size`` at a time."""
    size = served.spec.max_batch_size
    parts = []
    for start in range(0, n, size):
        stop = min(n, start + size)
        part = {k: v[start:stop] for k, v in columns.items()}
        parts.append(served.call(part, stop - start))
        if progress is not None:
            progress(stop, n)
    return Outputs.concat(parts)


# ---- rows ---------------------------------------------------------------------------------------


def read_rows(url: str, schema: Schema, store: CheckpointStore, limit: int) -> tuple[dict[str, Any], int]:
    """Parquet or CSV at ``url`` as checked input columns: its columns must be the function's
    inputs, exactly, and every value must pass the inputs' rules (errors name row and input)."""
    same = (split_protocol(url)[0] or "file") == (split_protocol(store.root)[0] or "file")
    shown = redact_url(url)
    try:
        fs, path = url_to_fs(url, **(store.storage_options if same else {}))
        with fs.open(path, "rb") as handle:
            is_csv = path.endswith((".csv", ".csv.gz"))
            table = _read_csv(handle, schema) if is_csv else pq.read_table(handle)
    except FileNotFoundError:
        raise PrecomputeError(f"no input table at {shown}") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise PrecomputeError(
            f"{shown} is not a readable Parquet or CSV table: {store.redact(str(exc))}"
        ) from None
    names = [f.name for f in schema.inputs]
    missing = [name for name in names if name not in table.column_names]
    extra = [name for name in table.column_names if schema.field(name) is None]
    if missing or extra:
        raise PrecomputeError(
            f"{shown}: the columns do not match the inputs of {names}: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    if table.num_rows == 0:
        raise PrecomputeError(f"{shown} has no rows")
    if table.num_rows > limit:
        raise PrecomputeError(f"{shown} has {table.num_rows} rows, above the limit of {limit} (--limit)")
    problems = Problems()
    columns: dict[str, Any] = {}
    for field in schema.inputs:
        with problems:
            columns[field.name] = from_arrow(field, table.column(field.name).combine_chunks())
    if problems.found:
        raise PrecomputeError(f"{shown}: {problems.error().message}")
    return columns, table.num_rows


def _read_csv(handle: Any, schema: Schema) -> pa.Table:
    """CSV typed by the schema (a country code like ``NO`` stays text, a day stays an int)."""
    types = {
        f.name: {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}.get(f.kind, pa.string())
        for f in schema.inputs
    }
    return pacsv.read_csv(handle, convert_options=pacsv.ConvertOptions(column_types=types))


def finite_values(field: InputField) -> list[Any] | None:
    """Every value ``field`` admits, when they are finitely many; None otherwise."""
    if field.kind == "category":
        return list(field.choices)
    if field.kind == "bool":
        return [False, True]
    c = field.constraint
    if field.kind == "int" and c is not None and c.ge is not None and c.le is not None:
        return list(range(math.ceil(c.ge), math.floor(c.le) + 1))
    return None


def enumerate_domain(schema: Schema, limit: int) -> tuple[dict[str, Any], int]:
    """Every combination of the inputs' values, as columns (refused when one is not finite, or
    when there are more than ``limit``)."""
    values = {f.name: finite_values(f) for f in schema.inputs}
    infinite = [f"{f.name} ({f.kind})" for f in schema.inputs if values[f.name] is None]
    if infinite:
        raise PrecomputeError(
            f"--domain needs every input finite (Literal, Enum, bool, int with Field(ge=, le=)); "
            f"not finite: {', '.join(infinite)}; give the rows with --inputs"
        )
    count = math.prod(len(v or ()) for v in values.values())
    if count > limit:
        raise PrecomputeError(
            f"the domain has {count:,} combinations, above the limit of {limit:,} (--limit)"
        )
    rows = list(itertools.product(*(v or () for v in values.values())))
    instances = [dict(zip(values, row, strict=True)) for row in rows]
    return codec.to_columns(schema, instances), count


def distinct(schema: Schema, columns: dict[str, Any], n: int) -> tuple[dict[str, Any], int]:
    """The rows with repeats dropped (the first kept): one model call per distinct input."""
    first: dict[Any, int] = {}
    for row, key in enumerate(canonical_keys(schema.inputs, columns, n)):
        first.setdefault(key, row)
    if len(first) == n:
        return columns, n
    index = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    return {k: v[index] for k, v in columns.items()}, len(first)

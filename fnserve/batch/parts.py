"""One output part: its predictions streamed into a Parquet file, its bad rows, then its marker.

A part's rows arrive in order, batch by batch, and are buffered only up to a row group
(:data:`ROW_GROUP_ROWS`). Its columns are ``row`` (the input row's number), the key columns, the
function's outputs (as its Arrow answers name them: ``prediction``, or a dict output's keys) and
``version``. Bad rows go to ``_errors/<part>.parquet``. The marker is written last: until it
exists the part is not done, and a rerun writes the part again from its first row.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Executor, Future
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fnserve.batch import BatchError
from fnserve.batch.columns import check_outputs
from fnserve.batch.job import ERRORS_DIR, Output
from fnserve.batch.rows import ROW
from fnserve.batch.scoring import Scored
from fnserve.batch.source import PartInfo

ROW_GROUP_ROWS = 65_536  # rows buffered before a Parquet row group is written
VERSION = "version"


class PartWriter:
    """``encoder``: where row groups are encoded and written, one at a time behind the caller (pyarrow
    does it without the GIL, so beside the model at no cost to it); None: in the caller's thread."""

    def __init__(
        self,
        output: Output,
        part: PartInfo,
        keys: tuple[str, ...],
        fingerprint: str,
        encoder: Executor | None = None,
    ):
        self.output, self.part, self.keys, self.fingerprint = output, part, keys, fingerprint
        self._encoder = encoder
        self._pending: Future[None] | None = None
        self.scored = 0
        self.versions: Counter[str] = Counter()
        self.bad: list[pa.Table] = []
        self.errors = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._file: Any = None
        self._writer: pq.ParquetWriter | None = None

    @property
    def file_name(self) -> str:
        return f"{self.part.name}.parquet"

    def add(self, scored: Scored) -> None:
        if scored.bad is not None and scored.bad.num_rows:
            self.bad.append(scored.bad)
            self.errors += scored.bad.num_rows
        if not scored.n:
            return
        batch = self._batch(scored)
        if self._writer is None:
            check_outputs(list(scored.outputs), self.keys)
            self._file = self.output.fs.open(self.output.at(self.file_name), "wb")
            self._writer = pq.ParquetWriter(self._file, batch.schema, use_dictionary=_repeating(batch.schema))
        elif not batch.schema.equals(self._writer.schema):
            try:
                batch = batch.cast(self._writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                raise BatchError(
                    f"the function's outputs changed type within {self.part.name}: "
                    f"{self._writer.schema.remove_metadata()} then {batch.schema}"
                ) from None
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        self.scored += batch.num_rows
        self.versions.update(scored.counts)
        if self._buffered >= ROW_GROUP_ROWS:
            self._flush()

    def finish(self, part: PartInfo) -> dict[str, Any]:
        """Close the part's files and write its marker (the commit); returns the marker."""
        self._close()
        errors_file = self.write_errors()
        if not self.scored:  # every row bad: no part file (one an interrupted run left goes)
            self._remove(self.file_name)
        if errors_file is None:
            self._remove(f"{ERRORS_DIR}/{self.part.name}.parquet")
        marker = {
            "fingerprint": self.fingerprint,
            "part": part.name,
            "index": part.index,
            "first_row": part.first_row,
            "rows": part.rows or 0,
            "scored": self.scored,
            "errors": self.errors,
            "versions": dict(sorted(self.versions.items())),
            "file": self.file_name if self.scored else None,
            "errors_file": errors_file,
        }
        self.output.mark_done(marker)
        return marker

    def abandon(self) -> None:
        """Stop without the marker (the part will be written again), its bad rows so far kept to look at."""
        self._close()
        self.write_errors()

    def write_errors(self) -> str | None:
        if not self.bad:
            return None
        relative = f"{ERRORS_DIR}/{self.part.name}.parquet"
        table = pa.concat_tables(self.bad, promote_options="permissive") if len(self.bad) > 1 else self.bad[0]
        path = self.output.at(relative)
        self.output.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.output.fs.open(path, "wb") as handle:
            pq.write_table(table, handle)
        return relative

    def _remove(self, relative: str) -> None:
        path = self.output.at(relative)
        if self.output.fs.exists(path):
            self.output.fs.rm(path)

    def _batch(self, scored: Scored) -> pa.RecordBatch:
        arrays = [pa.array(scored.ids, pa.int64()), *scored.keys, *scored.outputs.values(), scored.versions]
        return pa.RecordBatch.from_arrays(arrays, names=[ROW, *self.keys, *scored.outputs, VERSION])

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            table = pa.Table.from_batches(self._buffer)
            self._wait()  # one row group in the works at a time: memory stays at two
            if self._encoder is None:
                self._writer.write_table(table, row_group_size=max(self._buffered, 1))
            else:
                self._pending = self._encoder.submit(
                    self._writer.write_table, table, row_group_size=max(self._buffered, 1)
                )
        self._buffer, self._buffered = [], 0

    def _wait(self) -> None:
        """The row group being written, written (its error, if it failed, raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _close(self) -> None:
        if self._writer is not None:
            try:
                self._flush()
                self._wait()
            finally:
                self._writer.close()
                self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _repeating(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: the version (one value per model) and text. Numbers are
    not: a row number, an id or a score is mostly distinct, and trying costs three times the write."""
    kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary, pa.types.is_boolean)
    return [f.name for f in schema if f.name == VERSION or any(kind(f.type) for kind in kinds)]

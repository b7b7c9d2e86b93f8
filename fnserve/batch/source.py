"""Reading the input in parts and batches, in input order, with memory bounded by a few batches.

A job's rows are cut into **parts**: each is written as one output file, is the unit a rerun
resumes, and is what the indexes of a Kubernetes Job share out (index ``part.index % shards``).
Parquet parts are runs of consecutive row groups of one file holding at least ``part_rows`` rows,
known from the footers before anything is read (pyarrow.dataset then reads only the row groups
a part names). The other formats are read from the start of each file and cut every
``part_rows`` rows: Arrow IPC (file or stream), CSV through pyarrow's streaming reader (every cell
as text: :mod:`fnserve.batch.text` types them), JSON lines as lines. Part names
(``part-<file>-<n>``) sort in input order.

    source = Source.open("s3://bucket/bookings/", storage_options={...})
    reading = source.read(lambda part: True, columns=["x", "id"], batch_size=1024, part_rows=250_000)
    for item in reading:        # Piece(part, first_row, raw), ..., PartDone(part), Piece(...), ...
        ...
    reading.parts               # every part of the input, once read to the end
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from fnserve.batch import BatchError, readers
from fnserve.batch.files import InputFile, compression_of, list_files, pick_format
from fnserve.runtime.redact import redact_text, redact_url, secret_values

READ_ROWS = 8192  # Parquet rows read at a time, then cut into batches (memory: a few of them)
Invalid = readers.Invalid


@dataclass(frozen=True)
class PartInfo:
    index: int  # the part's position among all the job's parts: index i of n takes i % n
    name: str  # part-<file:05>-<n:06>: names sort in input order
    first_row: int  # the input row number (0-based, over all files) of its first row
    rows: int | None  # known before reading for Parquet; for the others once read (PartDone)


@dataclass(frozen=True)
class Piece:
    """At most ``batch_size`` consecutive rows of one part, as read."""

    part: PartInfo
    first_row: int
    raw: Any  # pa.RecordBatch (CSV: every column as text) or list[bytes] (JSON lines)
    invalid: Invalid = ()  # CSV lines found unreadable while reading these rows


@dataclass(frozen=True)
class PartDone:
    part: PartInfo  # its row count now known
    invalid: Invalid = ()


Item = Piece | PartDone


class Source:
    """The input of a job: its files and their format. ``read`` streams them."""

    def __init__(
        self, url: str, fs: AbstractFileSystem, files: list[InputFile], fmt: str, secrets: frozenset[str]
    ):
        self.url, self.fs, self.files, self.format = url, fs, files, fmt
        self.shown = redact_url(url)
        self.secrets = secrets
        self._parquet: dict[int, list[ParquetPart]] = {}  # footers read once, by rows per part

    @classmethod
    def open(
        cls, url: str, fmt: str | None = None, storage_options: Mapping[str, Any] | None = None
    ) -> Source:
        """The files at ``url`` and their format (``fmt``, else their names'); a BatchError says
        what is missing or unreadable, without the URL's credentials."""
        options = dict(storage_options or {})
        secrets = secret_values(url, options=options)
        shown = redact_url(url)
        try:
            fs, path = url_to_fs(url, **options)
            files = list_files(fs, path, shown)
        except (ValueError, ImportError, OSError) as exc:
            raise BatchError(f"cannot read {shown}: {redact_text(str(exc), secrets)}") from None
        return cls(url, fs, files, pick_format(files, fmt, shown), secrets)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def columns(self) -> dict[str, pa.DataType | None]:
        """The input's columns by name, with their Arrow types (None: text, typed row by row)."""
        with read_errors(self.shown, self.secrets):
            if self.format == "parquet":
                schema = ds.dataset(self.paths, filesystem=self.fs, format="parquet").schema
                return {field.name: field.type for field in schema}
            with self.open_file(self.files[0]) as (_, stream):
                return readers.columns(self.format, stream)

    def total_rows(self) -> int | None:
        """Rows of the whole input when the format says so without reading it (Parquet, Arrow files)."""
        with read_errors(self.shown, self.secrets):
            if self.format == "parquet":
                return sum(p.info.rows or 0 for p in self.parquet_parts(1))
            if self.format == "arrow":
                with contextlib.suppress(pa.ArrowInvalid):  # a stream has no footer: counted as read
                    return int(ds.dataset(self.paths, filesystem=self.fs, format="ipc").count_rows())
        return None

    def read(
        self,
        wanted: Callable[[PartInfo], bool],
        columns: Sequence[str],
        batch_size: int,
        part_rows: int,
        text: Sequence[str] = (),
    ) -> Reading:
        """A pass over the input yielding the ``wanted`` parts' rows (``columns`` of them). Parquet's
        ``text`` columns are read as dictionaries: each distinct string is made, and checked, once."""
        return Reading(self, wanted, list(columns), batch_size, part_rows, tuple(text))

    def parquet_parts(self, part_rows: int) -> list[ParquetPart]:
        """Parquet's parts, from the footers: runs of whole row groups of one file."""
        if part_rows not in self._parquet:
            self._parquet[part_rows] = self._plan_parquet(part_rows)
        return self._parquet[part_rows]

    def _plan_parquet(self, part_rows: int) -> list[ParquetPart]:
        parts: list[ParquetPart] = []
        first_row = 0
        dataset = ds.dataset(self.paths, filesystem=self.fs, format="parquet")
        for number, fragment in enumerate(dataset.get_fragments()):
            groups, rows, seq = [], 0, 0
            row_groups = fragment.row_groups
            for position, group in enumerate(row_groups):
                groups.append(group.id)
                rows += group.num_rows
                if rows >= part_rows or position == len(row_groups) - 1:
                    info = PartInfo(len(parts), part_name(number, seq), first_row, rows)
                    parts.append(ParquetPart(info, fragment, tuple(groups)))
                    first_row, groups, rows, seq = first_row + rows, [], 0, seq + 1
        return parts

    @contextlib.contextmanager
    def open_file(self, file: InputFile) -> Iterator[tuple[Any, Any]]:
        """The raw file (its position says how far reading got) and the stream to read from it
        (decompressed, for a compressed text file)."""
        with self.fs.open(file.path, "rb") as raw:
            codec = compression_of(file.path)
            if codec is None:
                yield raw, raw
                return
            with fsspec.open(file.path, "rb", compression=codec, fs=self.fs) as stream:
                yield raw, stream


@dataclass(frozen=True)
class ParquetPart:
    info: PartInfo
    fragment: Any  # the file's ParquetFileFragment
    row_groups: tuple[int, ...]


class Reading:
    """One pass over the input: the wanted parts' pieces, and ``parts`` (all of them) once done.

    ``bytes_read`` says how far into the input it got, for progress where row counts are unknown.
    """

    def __init__(
        self,
        source: Source,
        wanted: Callable[[PartInfo], bool],
        columns: list[str],
        size: int,
        rows: int,
        text: tuple[str, ...] = (),
    ):
        if size < 1 or rows < 1:
            raise ValueError("the batch size and the rows per part must be at least 1")
        self.source, self.wanted, self.columns = source, wanted, columns
        self.batch_size, self.part_rows, self.text = size, rows, text
        self.parts: list[PartInfo] = []
        self.complete = False  # read to the end: ``parts`` lists every part
        self.bytes_read = 0

    def __iter__(self) -> Iterator[Item]:
        with read_errors(self.source.shown, self.source.secrets):
            yield from self._parquet() if self.source.format == "parquet" else self._sequential()
        self.complete = True

    def _parquet(self) -> Iterator[Item]:
        fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=list(self.text)))
        for part in self.source.parquet_parts(self.part_rows):
            self.parts.append(part.info)
            if not self.wanted(part.info):
                continue
            first = part.info.first_row
            groups = list(part.row_groups)
            subset = fmt.make_fragment(
                part.fragment.path, filesystem=part.fragment.filesystem, row_groups=groups
            )
            read = max(self.batch_size, READ_ROWS)  # a scanner batch has its cost: read more, slice
            for batch in subset.to_batches(columns=self.columns, batch_size=read):
                for start in range(0, batch.num_rows, self.batch_size):
                    piece = batch.slice(start, self.batch_size)
                    yield Piece(part.info, first, piece)
                    first += piece.num_rows
            yield PartDone(part.info)

    def _sequential(self) -> Iterator[Item]:
        index, first_row, before = 0, 0, 0
        for number, file in enumerate(self.source.files):
            invalid: list[tuple[int, str]] = []
            seq, in_part, part = 0, 0, None
            for raw in self._file_rows(file, invalid, before):
                start = 0
                while start < len(raw):
                    if part is None:
                        part = PartInfo(index, part_name(number, seq), first_row, None)
                    take = min(self.batch_size, self.part_rows - in_part, len(raw) - start)
                    if self.wanted(part):
                        yield Piece(part, first_row, _slice(raw, start, take), tuple(invalid))
                    invalid.clear()
                    start, in_part, first_row = start + take, in_part + take, first_row + take
                    if in_part == self.part_rows:
                        yield from self._done(replace(part, rows=in_part), invalid)
                        index, seq, in_part, part = index + 1, seq + 1, 0, None
            if part is None and invalid:  # bad lines after the file's last row: a part of no rows
                part = PartInfo(index, part_name(number, seq), first_row, None)
            if part is not None:
                yield from self._done(replace(part, rows=in_part), invalid)
                index += 1
            before += file.size
            self.bytes_read = before

    def _done(self, part: PartInfo, invalid: list[tuple[int, str]]) -> Iterator[Item]:
        self.parts.append(part)
        if self.wanted(part):
            yield PartDone(part, tuple(invalid))
        invalid.clear()

    def _file_rows(self, file: InputFile, invalid: list[tuple[int, str]], before: int) -> Iterator[Any]:
        """One file's rows (Arrow, CSV, JSON lines) as its format's reader hands them over."""
        with self.source.open_file(file) as (raw, stream):
            for rows in readers.rows(self.source.format, stream, self.columns, invalid):
                self.bytes_read = before + raw.tell()
                yield rows


def part_name(file_number: int, seq: int) -> str:
    """``part-00002-000007``: the 8th part of the 3rd file."""
    return f"part-{file_number:05d}-{seq:06d}"


def _slice(raw: Any, start: int, count: int) -> Any:
    return raw[start : start + count] if isinstance(raw, list) else raw.slice(start, count)


@contextlib.contextmanager
def read_errors(shown: str, secrets: frozenset[str]) -> Iterator[None]:
    """Failures of the storage or of a file's contents as a BatchError naming the input."""
    try:
        yield
    except BatchError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        said = redact_text(f"{type(exc).__name__}: {exc}", secrets)
        raise BatchError(f"cannot read {shown}: {said}") from None

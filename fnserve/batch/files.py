"""Input files: the format a path holds, the files a URL names, and what identifies their content.

A URL names one file, a folder (every file below it, in name order, except those whose names
start with ``_`` or ``.``, as pyarrow.dataset skips them) or a glob (``s3://b/day=*/*.parquet``).
CSV and JSON lines may be compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``; fsspec decompresses).

>>> format_of("s3://bucket/scores/part-0.parquet"), format_of("rows.csv.gz"), format_of("notes.txt")
('parquet', 'csv', None)
>>> format_of("events.ndjson"), format_of("table.feather")
('jsonl', 'arrow')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem

from fnserve.batch import BatchError

FORMATS = ("parquet", "arrow", "csv", "jsonl")
TEXT_FORMATS = ("csv", "jsonl")  # read as text: compression allowed, row counts unknown until read
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
# fsspec's info() keys that change with a file's content, most telling first (S3, GCS, local, memory)
_STAMP_KEYS = ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "updated", "created")


@dataclass(frozen=True)
class InputFile:
    path: str  # in its file system, without the protocol
    size: int  # bytes
    stamp: str  # what changes when the content does: an ETag or hash, else the modification time

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "stamp": self.stamp}


def format_of(path: str) -> str | None:
    """The format a file's name says, or None."""
    name = path.rsplit("/", 1)[-1].lower()
    compressed = name.endswith(COMPRESSIONS)
    if compressed:
        name = name.rsplit(".", 1)[0]
    found = _EXTENSIONS.get("." + name.rsplit(".", 1)[-1]) if "." in name else None
    return found if not compressed or found in TEXT_FORMATS else None


def compression_of(path: str) -> str | None:
    """``"infer"`` for a compressed text file (fsspec picks the codec by its suffix), else None."""
    return "infer" if path.lower().endswith(COMPRESSIONS) else None


def list_files(fs: AbstractFileSystem, path: str, shown: str) -> list[InputFile]:
    """The files ``path`` names, in name order; a BatchError naming ``shown`` when there are none."""
    try:
        if any(c in path for c in "*?["):
            found: Mapping[str, Any] = fs.glob(path, detail=True)
        elif fs.isdir(path):
            found = fs.find(path, detail=True)
        else:
            found = {path: fs.info(path)}
    except FileNotFoundError:
        raise BatchError(f"no input at {shown}") from None
    root = path.rstrip("/")
    files = [
        InputFile(name, int(info.get("size") or 0), stamp(info))
        for name, info in sorted(found.items())
        if info.get("type", "file") == "file" and not _hidden(name, root)
    ]
    if not files:
        raise BatchError(f"no input files at {shown}")
    return files


def stamp(info: Mapping[str, Any]) -> str:
    """What identifies a file's content from fsspec's ``info()``: its ETag or hash where the store
    keeps one, else its modification time (the size is kept beside it)."""
    return next((f"{key}={info[key]}" for key in _STAMP_KEYS if info.get(key) is not None), "")


def pick_format(files: list[InputFile], given: str | None, shown: str) -> str:
    """``given`` (``--format``), else the one format every file's name says."""
    if given is not None:
        if given not in FORMATS:
            raise BatchError(f"--format {given!r} is not one of {', '.join(FORMATS)}")
        return given
    found = {f.path: format_of(f.path) for f in files}
    unknown = [path for path, fmt in found.items() if fmt is None]
    if unknown:
        raise BatchError(
            f"{shown}: cannot tell the format of {unknown[0].rsplit('/', 1)[-1]!r} from its name; "
            f"name files .parquet, .arrow, .csv or .jsonl, or give --format ({', '.join(FORMATS)})"
        )
    formats = sorted({fmt for fmt in found.values() if fmt is not None})
    if len(formats) > 1:
        raise BatchError(f"{shown} mixes formats ({', '.join(map(str, formats))}): one job reads one format")
    return str(formats[0])


def _hidden(name: str, root: str) -> bool:
    relative = name[len(root) :].lstrip("/") if name.startswith(root) else name.rsplit("/", 1)[-1]
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)

"""The manifest that makes a checkpoint version exist: sha256 and size of every file, plus metadata.

A store writes ``fnserve-manifest.json`` last into a version folder; readers parse it with
:meth:`Manifest.parse`, which refuses anything odd (unknown format, paths that would escape
the version folder, malformed digests) with a :class:`CheckpointCorrupt` naming where it
came from. A publisher lists a folder with :func:`publishable_files` and hashes each file with
:func:`hash_file`; a reader checks every download with :func:`verify_file`.

>>> data = render_manifest("recs", 1, {"model.bin": FileEntry(sha256="0" * 64, size=3)}, {"auc": 0.8})
>>> manifest = Manifest.parse(data, where="memory://models/recs/1/fnserve-manifest.json")
>>> manifest.version, manifest.files["model.bin"].size, manifest.metadata["auc"]
(1, 3, 0.8)
>>> unsafe_path_reason("../model.bin")
"empty, '.' and '..' segments are not allowed"
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fnserve.runtime.errors import CheckpointCorrupt, CheckpointError, CheckpointIncomplete

MANIFEST_NAME = "fnserve-manifest.json"
MANIFEST_FORMAT = 1
# Written into a cached copy after every file was verified; holds the manifest digest.
# Reserved here because no published file may take its name.
MARKER_NAME = ".fnserve-verified"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    sha256: str  # hex digest of the file's bytes
    size: int  # bytes


@dataclass(frozen=True)
class Manifest:
    """What a published version holds. ``digest`` is the sha256 of the manifest bytes as stored.

    >>> doc = b'{"format": 1, "name": "recs", "version": 1, "created": "2024-01-01T00:00:00Z", "files": {}}'
    >>> Manifest.parse(doc, where="memory://s/recs/1/fnserve-manifest.json").version
    1
    """

    name: str
    version: int
    created: str  # ISO 8601, UTC
    files: Mapping[str, FileEntry]  # '/'-separated path inside the version folder -> entry
    metadata: Mapping[str, Any]  # free-form JSON, e.g. {"metrics": {...}}
    digest: str

    @classmethod
    def parse(cls, data: bytes, *, where: str) -> Manifest:
        """Parse and check a manifest; anything odd is :class:`CheckpointCorrupt` naming ``where``
        (:class:`CheckpointIncomplete` when it is not JSON: empty or cut short, still being written)."""
        try:
            doc = json.loads(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            # Empty or cut short: a manifest being written in place, not yet published.
            raise CheckpointIncomplete(
                f"{where}: manifest is not valid JSON, taken as not published yet: {exc}"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise CheckpointCorrupt(f"{where}: manifest must be a JSON object with format {MANIFEST_FORMAT}")
        name: Any = doc.get("name")
        version: Any = doc.get("version")
        created: Any = doc.get("created")
        files: Any = doc.get("files")
        metadata: Any = doc.get("metadata", {})
        checks = [
            (isinstance(name, str) and bool(name), "'name' must be a non-empty string"),
            (_is_positive_int(version), "'version' must be a positive integer"),
            (isinstance(created, str), "'created' must be a string"),
            (isinstance(files, dict), "'files' must be an object"),
            (isinstance(metadata, dict), "'metadata' must be an object"),
        ]
        for ok, problem in checks:
            if not ok:
                raise CheckpointCorrupt(f"{where}: bad manifest: {problem}")
        entries = {path: _parse_entry(path, entry, where) for path, entry in files.items()}
        return cls(
            name=name,
            version=version,
            created=created,
            files=MappingProxyType(entries),
            metadata=MappingProxyType(metadata),
            digest=hashlib.sha256(data).hexdigest(),
        )


def render_manifest(
    name: str, version: int, files: Mapping[str, FileEntry], metadata: Mapping[str, Any]
) -> bytes:
    """The manifest bytes for one version, stamped now (UTC); ValueError on metadata that is not JSON."""
    doc = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {rel: {"sha256": e.sha256, "size": e.size} for rel, e in sorted(files.items())},
        "metadata": dict(metadata),
    }
    try:
        return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata must be plain JSON (no NaN, no objects): {exc}") from None


def unsafe_path_reason(path: Any) -> str | None:
    """Why ``path`` may not name a file inside a version folder, or None when it is fine."""
    if not isinstance(path, str) or not path:
        return "not a non-empty string"
    if path.startswith("/") or "\\" in path or "\x00" in path:
        return "absolute paths, backslashes and NUL are not allowed"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "empty, '.' and '..' segments are not allowed"
    if path in (MANIFEST_NAME, MARKER_NAME):
        return "reserved name"
    return None


def hash_file(path: Path) -> FileEntry:
    """The entry a manifest lists for the local file at ``path``."""
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return FileEntry(sha256=digest, size=os.fstat(handle.fileno()).st_size)


def verify_file(local: Path, expected: FileEntry, url: str) -> None:
    """Raise :class:`CheckpointCorrupt` naming ``url`` unless ``local`` matches its manifest entry."""
    got = hash_file(local)
    if got.size != expected.size:
        raise CheckpointCorrupt(f"{url} is corrupt: {got.size} bytes, the manifest says {expected.size}")
    if got.sha256 != expected.sha256:
        raise CheckpointCorrupt(f"{url} is corrupt: its sha256 differs from the manifest's")


def publishable_files(source: Path) -> dict[str, Path]:
    """Every file under ``source`` by its '/'-separated relative path; refuses what cannot be published."""
    if not source.is_dir():
        raise CheckpointError(f"cannot publish {source}: not a folder")
    root = source.resolve()
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        linked = [here / d for d in dirnames if (here / d).is_symlink()]
        if linked:
            raise CheckpointError(
                f"cannot publish {linked[0]}: a symlinked folder; copy its files in instead"
            )
        for path in (here / f for f in filenames):
            target = path.resolve()
            if not target.is_relative_to(root) or not target.is_file():
                raise CheckpointError(f"cannot publish {path}: it links outside {source} (to {target})")
            rel = path.relative_to(root).as_posix()
            reason = unsafe_path_reason(rel)
            if reason:
                raise CheckpointError(f"cannot publish {path}: {reason}")
            found[rel] = path
    if not found:
        raise CheckpointError(f"cannot publish {source}: it holds no files")
    return dict(sorted(found.items()))


def _parse_entry(path: Any, entry: Any, where: str) -> FileEntry:
    reason = unsafe_path_reason(path)
    if reason:
        raise CheckpointCorrupt(f"{where}: manifest lists unsafe path {path!r}: {reason}")
    sha: Any = entry.get("sha256") if isinstance(entry, dict) else None
    size: Any = entry.get("size") if isinstance(entry, dict) else None
    if not isinstance(sha, str) or not _SHA256_RE.match(sha) or not (_is_positive_int(size) or size == 0):
        raise CheckpointCorrupt(f"{where}: manifest entry for {path!r} needs a sha256 hex digest and a size")
    return FileEntry(sha256=sha, size=size)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0

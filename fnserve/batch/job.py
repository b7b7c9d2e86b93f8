"""A batch job: what it is asked (:class:`JobSpec`), what identifies it, and its output folder.

Two runs are **the same job** when their fingerprints match: a sha256 of the input's files (path,
size and ETag or modification time of each), its format, the function (its name and the digest of
its folder's Python files; ``None`` when a server scores it), the checkpoint version that scores
it (``latest`` resolved when the job starts), the key and ignored columns and the rows per part.
The batch size, concurrency and ``--max-errors`` change how, not what: they are not in it.

:class:`Output` claims the output folder: a folder holding another job (or anything else) is
refused unless ``overwrite``, naming what differs; the same job resumes, skipping the parts whose
marker says they are done. Markers (``_fnbatch/done/<part>.json``) are written after their part's
files, one object each, so any number of writers (the indexes of a Kubernetes Job) commit
without a lock; whoever sees the last one written joins them into ``_fnbatch/manifest.json``.

>>> spec = JobSpec("recs", "s3://in/rows.parquet", "s3://out/scores", keys=("booking_id",))
>>> JobSpec.from_json(spec.to_json()) == spec
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsspec.core import split_protocol, url_to_fs

from fnserve.batch import BatchError
from fnserve.batch.source import PartInfo
from fnserve.runtime.redact import redact_text, redact_url, secret_values

DEFAULT_PART_ROWS = 250_000
JOB_FILE, DONE_DIR, MANIFEST_FILE = "_fnbatch/job.json", "_fnbatch/done", "_fnbatch/manifest.json"
ERRORS_DIR = "_errors"
_DIFFERENCES = {  # identity key -> what a person is told differs
    "input": "the input (its files, or their contents)",
    "function": "the function",
    "code": "the function's code",
    "version": "the checkpoint version",
    "keys": "the key columns (--key)",
    "ignore": "the ignored columns (--ignore)",
    "part_rows": "the rows per part (--part-rows)",
}


@dataclass(frozen=True)
class JobSpec:
    """What a job is asked to do: ``fn batch``'s options, or ``FNSERVE_BATCH_JOB`` in a pod."""

    function: str
    input: str  # fsspec URL: a file, a folder or a glob
    output: str  # fsspec URL of the output folder
    format: str | None = None  # None: the files' names say
    version: str | None = None  # a checkpoint version number or "latest"; None: the function's own
    keys: tuple[str, ...] = ()  # input columns copied into the output beside each prediction
    ignore: tuple[str, ...] = ()  # input columns neither scored nor copied
    part_rows: int = DEFAULT_PART_ROWS  # rows per output part: the unit of resuming and of sharing out
    batch_size: int | None = None  # rows per model call or request; None: the function's max_batch_size
    max_errors: int | None = None  # stop once more rows than this are bad; None: never

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            data = json.loads(text)
            data["keys"], data["ignore"] = tuple(data.get("keys", ())), tuple(data.get("ignore", ()))
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise BatchError(f"not a batch job description: {exc}") from None


def identity(
    spec: JobSpec, fmt: str, files: Sequence[Mapping[str, Any]], version: int | None, code: str | None
) -> dict[str, Any]:
    """What makes a job this job (see the module's docstring); its sha256 is the fingerprint."""
    return {
        "input": {"format": fmt, "files": list(files)},
        "function": spec.function,
        "code": code,
        "version": version,
        "keys": list(spec.keys),
        "ignore": list(spec.ignore),
        "part_rows": spec.part_rows,
    }


def fingerprint(ident: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def code_digest(folder: Path) -> str:
    """sha256 of the Python files of a function's folder (names and contents), helpers included,
    as its image holds them (``fn build``'s ignore rules, the function's .dockerignore among them):
    the same digest here and in the pods of a Kubernetes Job."""
    from fnserve.images.plan import function_files

    digest = hashlib.sha256()
    for file in sorted(function_files(folder), key=lambda f: f.path):
        if file.path.endswith(".py"):
            digest.update(f"{file.path}\0".encode() + file.content() + b"\0")
    return digest.hexdigest()


def storage_options_for(url: str, store_root: str, store_options: Mapping[str, Any]) -> dict[str, Any]:
    """The store's fsspec options for a URL on the store's protocol (its credentials, its endpoint);
    none for another protocol, whose credentials come from the environment."""
    same = (split_protocol(url)[0] or "file") == (split_protocol(store_root)[0] or "file")
    return dict(store_options) if same else {}


class Output:
    """The output folder of a job."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None):
        self.url, self.shown = url.rstrip("/"), redact_url(url.rstrip("/"))
        self.secrets = secret_values(url, options=storage_options or {})
        try:
            self.fs, self.path = url_to_fs(self.url, **dict(storage_options or {}))
        except (ValueError, ImportError) as exc:
            raise BatchError(f"cannot write {self.shown}: {redact_text(str(exc), self.secrets)}") from None
        self.path = self.path.rstrip("/")

    def at(self, relative: str) -> str:
        return f"{self.path}/{relative}"

    def shown_at(self, relative: str) -> str:
        return f"{self.shown}/{relative}"

    def claim(
        self, ident: Mapping[str, Any], *, overwrite: bool, write: bool = True
    ) -> dict[str, dict[str, Any]]:
        """Make the folder this job's; the markers of its parts done before (a resumed job).
        With ``write`` False only check that it could be (``--dry-run``)."""
        print_ = fingerprint(ident)
        job = self._read_json(JOB_FILE)
        if job is not None and job.get("fingerprint") == print_:
            return self.done(print_)
        if job is not None or self._holds_anything():
            if not overwrite:
                raise BatchError(self._refusal(job, ident))
            if write:
                self.fs.rm(self.path, recursive=True)
        if not write:
            return {}
        self.fs.makedirs(self.path, exist_ok=True)
        self._write_json(JOB_FILE, {"fingerprint": print_, "identity": dict(ident)})
        return {}

    def done(self, print_: str) -> dict[str, dict[str, Any]]:
        """The markers of this job's finished parts, by part name (unreadable ones: not done)."""
        folder = self.at(DONE_DIR)
        try:
            names = [n for n in self.fs.ls(folder, detail=False) if str(n).endswith(".json")]
        except FileNotFoundError:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for data in (self.fs.cat(names) if names else {}).values():
            try:
                marker = json.loads(data)
            except ValueError:
                continue  # cut short while written: the part is done again
            if marker.get("fingerprint") == print_:
                found[marker["part"]] = marker
        return found

    def mark_done(self, marker: Mapping[str, Any]) -> None:
        self._write_json(f"{DONE_DIR}/{marker['part']}.json", marker)

    def join(self, parts: Iterable[PartInfo], print_: str) -> dict[str, Any] | None:
        """``manifest.json`` once every part is done (None while some is not): the parts in order."""
        done = self.done(print_)
        parts = list(parts)
        if any(p.name not in done for p in parts):
            return None
        listed = [{k: v for k, v in done[p.name].items() if k != "fingerprint"} for p in parts]
        versions: dict[str, int] = {}
        for marker in listed:
            for version, count in marker["versions"].items():
                versions[version] = versions.get(version, 0) + count
        manifest = {
            "fingerprint": print_,
            "rows": sum(m["rows"] for m in listed),
            "scored": sum(m["scored"] for m in listed),
            "errors": sum(m["errors"] for m in listed),
            "versions": dict(sorted(versions.items())),
            "parts": listed,
        }
        self._write_json(MANIFEST_FILE, manifest)
        return manifest

    def manifest(self) -> dict[str, Any] | None:
        return self._read_json(MANIFEST_FILE)

    def _holds_anything(self) -> bool:
        try:
            return (
                bool(self.fs.ls(self.path, detail=False))
                if self.fs.isdir(self.path)
                else self.fs.exists(self.path)
            )
        except FileNotFoundError:
            return False

    def _refusal(self, job: Mapping[str, Any] | None, ident: Mapping[str, Any]) -> str:
        if job is None:
            return f"{self.shown} exists and is not the output of fn batch; --overwrite replaces it"
        before = job.get("identity") or {}
        differs = [text for key, text in _DIFFERENCES.items() if before.get(key) != ident.get(key)]
        if "version" in [k for k in _DIFFERENCES if before.get(k) != ident.get(k)]:
            differs[differs.index(_DIFFERENCES["version"])] += (
                f" ({before.get('version')} then, {ident.get('version')} now: --version "
                f"{before.get('version')} resumes it)"
            )
        said = ", ".join(differs) or "its description"
        return f"{self.shown} holds another batch job (it differs in {said}); --overwrite replaces it"

    def _read_json(self, relative: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.fs.cat_file(self.at(relative)))
        except FileNotFoundError:
            return None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _write_json(self, relative: str, data: Mapping[str, Any]) -> None:
        path = self.at(relative)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

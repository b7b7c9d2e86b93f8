"""Versioned checkpoints in any fsspec storage, fetched into a verified local cache.

Layout (TensorFlow Serving's numbered versions)::

    {root}/{name}/{version}/...files...
    {root}/{name}/{version}/fnserve-manifest.json     # sha256 + size of every file; written last

A version exists once its manifest does (see :mod:`fnserve.runtime.manifest`): publishing uploads
the files first and the manifest last, so readers never see half a checkpoint. Fetching downloads
into a private temporary folder, checks every file against the manifest and only then renames it
into the cache.

    store = CheckpointStore("s3://models", storage_options={"anon": False})
    store.publish("recs", Path("out/"), metadata={"metrics": {"auc": 0.8}})   # -> 1
    checkpoint = store.fetch("recs")              # latest; checkpoint.path is a local folder
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem

from fnserve.runtime.errors import CheckpointCorrupt, CheckpointError, CheckpointNotFound, StorageUnavailable
from fnserve.runtime.manifest import (
    MANIFEST_NAME,
    MARKER_NAME,
    FileEntry,
    Manifest,
    hash_file,
    publishable_files,
    render_manifest,
    verify_file,
)
from fnserve.runtime.redact import redact_text, redact_url, secret_values
from fnserve.runtime.spec import check_name, check_version

# Re-exported: callers and tests know the manifest types by this module.
__all__ = ["MANIFEST_NAME", "Checkpoint", "CheckpointStore", "FileEntry", "Manifest"]

# Exceptions from these libraries mean "the store cannot be reached", whatever their class.
_STORAGE_LIBRARIES = {"botocore", "aiobotocore", "aiohttp", "requests", "urllib3", "google", "gcsfs"}


def _raised_by_storage_library(exc: BaseException) -> bool:
    """Whether a built-in exception (ValueError, TypeError...) was raised inside a storage client
    library: how aiohttp or botocore refuse settings they cannot combine, not a bug of fnserve's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return isinstance(module, str) and module.split(".")[0] in _STORAGE_LIBRARIES


# One download per cache entry at a time in this process (other processes are handled by the rename).
_download_locks: dict[Path, threading.Lock] = {}
_download_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Checkpoint:
    """A fetched version: ``path`` is a local, verified copy of the folder at ``url``."""

    name: str
    version: int
    url: str
    path: Path
    manifest: Manifest


class CheckpointStore:
    """Publish and fetch numbered checkpoint versions under one fsspec ``root`` URL.

    >>> store = CheckpointStore("memory://doc-store", cache_dir=Path(tempfile.mkdtemp()))
    >>> store.location("recs")
    'memory://doc-store/recs'
    >>> store.versions("recs")
    []
    """

    def __init__(
        self,
        root: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: Path | None = None,
    ):
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})
        # What no message may show: the credentials in the root URL and in the options.
        self.secrets = secret_values(self.root, options=self.storage_options)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self._filesystem(self.root)  # an unknown protocol or a missing backend fails here, not later

    def __repr__(self) -> str:
        return f"CheckpointStore({redact_url(self.root)!r}, cache_dir={str(self.cache_dir)!r})"

    def redact(self, text: str) -> str:
        """``text`` (a message about this store) as it may be shown: URLs and credentials masked."""
        return redact_text(text, self.secrets)

    def location(self, name: str) -> str:
        """URL of the folder holding ``name``'s versions; a full URL is used as that folder."""
        if "://" in name:
            return name.rstrip("/")
        return f"{self.root}/{check_name('checkpoint', name)}"

    def versions(self, name: str) -> list[int]:
        """Published versions of ``name`` (those with a manifest), ascending."""
        url = self.location(name)
        fs, folder = self._filesystem(url)
        with self._storage_errors(url):
            return [
                v for v in self._version_folders(fs, folder) if fs.exists(f"{folder}/{v}/{MANIFEST_NAME}")
            ]

    def latest(self, name: str) -> int | None:
        """The highest published version of ``name``, or None."""
        url = self.location(name)
        fs, folder = self._filesystem(url)
        with self._storage_errors(url):
            # Newest first: usually one manifest check answers the question.
            for version in reversed(self._version_folders(fs, folder)):
                if fs.exists(f"{folder}/{version}/{MANIFEST_NAME}"):
                    return version
        return None

    def resolve(self, name: str, version: str | int = "latest") -> int:
        """``"latest"`` or a version number -> a published version number, else CheckpointNotFound."""
        if str(version) == "latest":
            latest = self.latest(name)
            if latest is None:
                raise self.none_published(name)
            return latest
        number = _version_number(version)
        self.manifest(name, number)  # raises CheckpointNotFound naming what is there
        return number

    def none_published(self, name: str) -> CheckpointNotFound:
        """The error for a checkpoint without any published version."""
        return CheckpointNotFound(
            f"checkpoint {name!r} has no published version in {redact_url(self.location(name))}"
        )

    def manifest(self, name: str, version: int) -> Manifest:
        """Read and check the manifest of one version."""
        url = f"{self.location(name)}/{_version_number(version)}/{MANIFEST_NAME}"
        fs, path = self._filesystem(url)
        with self._storage_errors(url):
            try:
                data = fs.cat_file(path)
            except FileNotFoundError:
                published = ", ".join(map(str, self.versions(name))) or "none"
                raise CheckpointNotFound(
                    f"checkpoint {name!r} has no published version {version} in "
                    f"{redact_url(self.location(name))} "
                    f"(published: {published})"
                ) from None
        return Manifest.parse(data, where=redact_url(url))

    def publish(self, name: str, local_dir: str | Path, *, metadata: Mapping[str, Any] | None = None) -> int:
        """Upload every file under ``local_dir`` as a new version of ``name``; return its number.

        One publisher per name at a time (a training job): two racing publishers could pick the
        same number, and fsspec offers no portable create-if-absent to stop them.

        >>> store.publish("recs", Path("out/"), metadata={"metrics": {"accuracy": 0.91}})  # doctest: +SKIP
        3
        """
        url = self.location(name)
        files = publishable_files(Path(local_dir))
        entries = {rel: hash_file(path) for rel, path in files.items()}
        fs, folder = self._filesystem(url)
        with self._storage_errors(url):
            # Count unpublished folders too: a half-written version from a crashed publisher is never reused.
            version = max(self._version_folders(fs, folder), default=0) + 1
            manifest = render_manifest(name, version, entries, metadata or {})
            try:
                for rel, path in files.items():
                    target = f"{folder}/{version}/{rel}"
                    if isinstance(fs, LocalFileSystem):  # only local folders must exist before a write
                        Path(target).parent.mkdir(parents=True, exist_ok=True)
                    fs.put_file(str(path), target)
                _write_atomically(
                    fs, f"{folder}/{version}/{MANIFEST_NAME}", manifest
                )  # last: this publishes it
            except FileNotFoundError as exc:
                raise CheckpointError(
                    f"cannot publish to {redact_url(url)}: not found: {self.redact(str(exc))}"
                ) from exc
        return version

    def withdraw(self, name: str, version: int) -> None:
        """Unpublish one version: its manifest goes, so no reader sees it from then on. Its files stay,
        as a crashed publisher's do, and its number is never reused. For a version whose publisher
        failed after publishing it (a scheduled training run that exited non-zero)."""
        url = f"{self.location(name)}/{_version_number(version)}/{MANIFEST_NAME}"
        fs, path = self._filesystem(url)
        with self._storage_errors(url), contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)

    def fetch(self, name: str, version: str | int = "latest") -> Checkpoint:
        """A local, verified copy of one version, downloaded once and then served from the cache."""
        number = self.resolve(name) if str(version) == "latest" else _version_number(version)
        manifest = self.manifest(name, number)  # CheckpointNotFound when that version is not published
        url = f"{self.location(name)}/{number}"
        key = hashlib.sha256(f"{url}\n{manifest.digest}".encode()).hexdigest()[:24]
        final = self.cache_dir / f"{_slug(name)}-{number}-{key}"
        if not _is_verified(final, manifest.digest):
            with _download_lock(final):
                if not _is_verified(final, manifest.digest):  # another thread may have finished it meanwhile
                    self._download(url, manifest, final)
        return Checkpoint(name=name, version=number, url=url, path=final, manifest=manifest)

    def _download(self, url: str, manifest: Manifest, final: Path) -> None:
        """Download into a private folder, verify, then rename into place (atomic on one file system)."""
        fs, base = self._filesystem(url)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.cache_dir))
        try:
            for rel, entry in manifest.files.items():
                local, file_url = temp / rel, f"{url}/{rel}"
                local.parent.mkdir(parents=True, exist_ok=True)
                shown = redact_url(file_url)
                with self._storage_errors(file_url):
                    try:
                        fs.get_file(f"{base}/{rel}", str(local))
                    except FileNotFoundError:
                        raise CheckpointCorrupt(f"{shown} is listed in the manifest but missing") from None
                verify_file(local, entry, shown)
            (temp / MARKER_NAME).write_text(manifest.digest)
            _install(temp, final, manifest.digest)
        finally:
            shutil.rmtree(temp, ignore_errors=True)  # gone already when installed

    def filesystem(self, url: str) -> tuple[AbstractFileSystem, str]:
        """The fsspec file system and path of ``url``, with this store's options where ``url`` is on
        the store's protocol: for what keeps its own files beside the checkpoints (the queue of
        asynchronous calls). Use it inside :meth:`storage_errors`."""
        return self._filesystem(url)

    def storage_errors(self, url: str) -> contextlib.AbstractContextManager[None]:
        """``with store.storage_errors(url):`` a backend's outage becomes one StorageUnavailable
        naming ``url`` (redacted); FileNotFoundError passes through as it is."""
        return self._storage_errors(url)

    def _filesystem(self, url: str) -> tuple[AbstractFileSystem, str]:
        # The store's options belong to its protocol; a full URL on another protocol gets none.
        same = (split_protocol(url)[0] or "file") == (split_protocol(self.root)[0] or "file")
        fs, path = url_to_fs(url, **(self.storage_options if same else {}))
        return fs, path.rstrip("/")

    @contextlib.contextmanager
    def _storage_errors(self, url: str) -> Iterator[None]:
        """Turn the many ways a backend reports an outage into one StorageUnavailable naming ``url``.

        The backend's text is shown redacted: botocore, aiohttp and fsspec quote the URL they were
        given, credentials and all.
        """
        try:
            yield
        except (FileNotFoundError, CheckpointError):
            raise
        except Exception as exc:
            library = type(exc).__module__.split(".")[0]
            outage = isinstance(exc, OSError) or library in _STORAGE_LIBRARIES
            # e.g. aiohttp's ValueError for credentials in the URL and an Authorization header
            refused = not outage and _raised_by_storage_library(exc)
            if not (outage or refused):
                raise
            said = redact_text(f"{type(exc).__name__}: {exc}", self.secrets | secret_values(url))
            problem = "refuses its settings (store URL or options)" if refused else "is unavailable"
            raise StorageUnavailable(f"storage at {redact_url(url)} {problem}: {said}") from exc

    @staticmethod
    def _version_folders(fs: AbstractFileSystem, folder: str) -> list[int]:
        """Every numbered folder, published or not, ascending."""
        # fsspec caches listings per file-system instance; a long-running server must see new versions.
        fs.invalidate_cache()
        try:
            entries = fs.ls(folder, detail=True)
        except FileNotFoundError:
            return []
        names = (
            str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"
        )
        return sorted(int(n) for n in names if n.isdigit() and n == str(int(n)) and int(n) > 0)


def _write_atomically(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` so that readers see no file or all of it, never a part.

    A file store writes in place (a reader could find the manifest empty or cut short), so write
    a temporary name first and move it: a rename on ``file://``, a server-side copy on object stores.
    """
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    fs.pipe_file(temp, data)
    try:
        fs.mv(temp, path)
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the error that matters is the move's
            fs.rm_file(temp)
        raise


def _is_verified(path: Path, digest: str) -> bool:
    try:
        return (path / MARKER_NAME).read_text() == digest
    except OSError:
        return False


def _download_lock(final: Path) -> threading.Lock:
    with _download_locks_guard:
        return _download_locks.setdefault(final, threading.Lock())


def _install(temp: Path, final: Path, digest: str) -> None:
    """Rename a verified download into place; if another loader got there first, keep theirs."""
    error: OSError | None = None
    for _ in range(3):
        try:
            os.rename(temp, final)
            return
        except OSError as exc:
            error = exc
            if _is_verified(final, digest):
                return  # the caller removes ours
            # Whatever sits there was not verified (made by hand, or by an older fnserve): swap it out.
            trash = final.with_name(f".trash-{uuid.uuid4().hex}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
    raise CheckpointError(
        f"could not move a verified checkpoint into the cache at {final}: {error}"
    ) from error


def _version_number(version: str | int) -> int:
    if isinstance(version, bool) or str(version) == "latest":
        raise ValueError(f"version {version!r} must be a positive integer")
    return int(check_version(str(version)))


def _slug(name: str) -> str:
    """A cache-folder prefix for humans; uniqueness comes from the hash after it."""
    return re.sub(r"[^a-z0-9_-]+", "-", name.rsplit("/", 1)[-1].lower())[:40] or "checkpoint"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fnserve" / "checkpoints"

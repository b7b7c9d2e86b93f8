"""The queue's files, through fsspec, beside the checkpoints: no broker, any store that publishes.

One folder per function under ``{queue}/{part}/`` (``part``: ``serve`` for ``fn serve`` and the
runtime, ``gateway`` for the gateway, so the two never take each other's calls)::

    recs/requests/{key}             a call accepted and not finished (removed once its outcome is)
    recs/leases/{key}.{attempt}     a runner's claim on run number ``attempt`` of that call
    recs/results/{key}              its outcome: created once, the first writer wins
    recs/callbacks/{key}.{state}    its callback: pending, delivered or failed
    recs/expired/{key}              an outcome past its time: 410 Gone for another ``result_ttl_s``

Two primitives carry the guarantees, both on every store fnserve supports:

* a **durable write**: on ``file://`` a temporary file, fsync, rename, fsync of the folder (a reader
  sees all of it or nothing, and it survives a power cut); on an object store one PUT;
* an **exclusive create** that fails when the file exists: on ``file://`` a hard link of a finished
  temporary file (atomic, whole); elsewhere fsspec's ``pipe_file(mode="create")`` — S3's
  ``If-None-Match: *``, memory's own check. A store without a real one (fsspec's generic fallback
  checks, then writes) cannot stop two runners that finish at the same instant from both recording.

Everything here blocks: the queue calls it from its own worker threads.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from fnserve.runtime.asynccalls.records import CallRequest, Lease, Outcome
from fnserve.runtime.errors import StorageUnavailable
from fnserve.runtime.redact import redact_url
from fnserve.runtime.store import CheckpointStore

CALLBACK_STATES = ("pending", "delivered", "failed")
READ_ONLY_PROTOCOLS = frozenset({"http", "https"})
# memory:// checks, then writes: two threads of one process could both create. (Other processes
# cannot see a process's memory:// store at all.)
_MEMORY_LOCK = threading.Lock()


class CallStore:
    """The files of one part's queue (``{queue}/{part}``), per function; blocking calls."""

    def __init__(self, store: CheckpointStore, queue: str, part: str):
        self.url = f"{queue.rstrip('/')}/{part}"
        self._store = store
        with store.storage_errors(self.url):
            self.fs, self.root = store.filesystem(self.url)  # an unknown protocol fails here, at start
        self.local = isinstance(self.fs, LocalFileSystem)
        self._made: set[str] = set()  # local folders known to exist

    @property
    def writable(self) -> bool:
        """Whether fsspec can write here at all (``http(s)://`` serves files, it takes none)."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return not set(protocols) & READ_ONLY_PROTOCOLS

    def __repr__(self) -> str:
        return f"CallStore({redact_url(self.url)!r})"

    # --- requests -----------------------------------------------------------------------------

    def put_request(self, function: str, key: str, request: CallRequest) -> None:
        """Store an accepted call durably: when this returns, a restart will find it."""
        self._write(self._path(function, "requests", key), request.encode())

    def read_request(self, function: str, key: str) -> CallRequest | None:
        data = self._read(self._path(function, "requests", key))
        return CallRequest.decode(data) if data is not None else None

    def delete_request(self, function: str, key: str) -> None:
        self._delete(self._path(function, "requests", key))

    def has_request(self, function: str, key: str) -> bool:
        return self._exists(self._path(function, "requests", key))

    def requests(self, function: str) -> list[str]:
        """Keys of the calls not finished, oldest first (keys begin with the acceptance time)."""
        return sorted(self._names(function, "requests"))

    # --- leases -------------------------------------------------------------------------------

    def claim(self, function: str, key: str, lease: Lease) -> bool:
        """Take run ``lease.attempt`` of a call; False when another runner took it first."""
        path = self._path(function, "leases", f"{key}.{lease.attempt}")
        return self._create(path, lease.encode(), durable=False)  # lost in a power cut: run again

    def renew(self, function: str, key: str, lease: Lease) -> None:
        self._write(self._path(function, "leases", f"{key}.{lease.attempt}"), lease.encode(), durable=False)

    def read_lease(self, function: str, key: str, attempt: int) -> Lease | None:
        data = self._read(self._path(function, "leases", f"{key}.{attempt}"))
        try:
            return Lease.decode(data) if data is not None else None
        except (ValueError, TypeError):
            return None  # caught half-written by a store without atomic writes: read again later

    def leases(self, function: str) -> dict[str, int]:
        """The highest run claimed of each call that has a lease: ``{key: attempt}``."""
        found: dict[str, int] = {}
        for name in self._names(function, "leases"):
            key, _, attempt = name.partition(".")
            if attempt.isdigit():
                found[key] = max(found.get(key, 0), int(attempt))
        return found

    def drop_leases(self, function: str, key: str, attempts: int) -> None:
        for attempt in range(1, attempts + 1):
            self._delete(self._path(function, "leases", f"{key}.{attempt}"))

    # --- outcomes -----------------------------------------------------------------------------

    def record(self, function: str, key: str, outcome: Outcome) -> bool:
        """Record a call's outcome unless one is recorded already (then False: this run lost)."""
        return self._create(self._path(function, "results", key), outcome.encode())

    def read_outcome(self, function: str, key: str) -> Outcome | None:
        data = self._read(self._path(function, "results", key))
        return Outcome.decode(data) if data is not None else None

    def outcomes(self, function: str) -> dict[str, float | None]:
        """``{key: when it was recorded}`` of every outcome kept (None: the store does not say)."""
        return self._times(function, "results")

    # --- callbacks ----------------------------------------------------------------------------

    def mark_callback(self, function: str, key: str, state: str, detail: bytes = b"") -> None:
        """Note a callback's state: ``pending`` before the outcome is recorded, then ``delivered`` or
        ``failed`` with what happened (which replaces the pending note)."""
        self._write(self._path(function, "callbacks", f"{key}.{state}"), detail)
        if state != "pending":
            self._delete(self._path(function, "callbacks", f"{key}.pending"))

    def callback_state(self, function: str, key: str) -> tuple[str, bytes] | None:
        for state in reversed(CALLBACK_STATES):  # a final state wins over a pending note left behind
            data = self._read(self._path(function, "callbacks", f"{key}.{state}"))
            if data is not None:
                return state, data
        return None

    def callback_marks(self, function: str) -> dict[str, str]:
        """``{key: state}`` of every callback noted (a final state over ``pending``)."""
        marks: dict[str, str] = {}
        for name in self._names(function, "callbacks"):
            key, _, state = name.partition(".")
            if state in CALLBACK_STATES and marks.get(key) in (None, "pending"):
                marks[key] = state
        return marks

    # --- expiry -------------------------------------------------------------------------------

    def expire(self, function: str, key: str) -> None:
        """Replace a call's files by a tombstone (so it answers 410 Gone for a while, then 404)."""
        self._write(self._path(function, "expired", key), b"", durable=False)
        self.forget(function, key, tombstone=False)

    def is_expired(self, function: str, key: str) -> bool:
        return self._exists(self._path(function, "expired", key))

    def tombstones(self, function: str) -> dict[str, float | None]:
        return self._times(function, "expired")

    def forget(self, function: str, key: str, *, tombstone: bool = True) -> None:
        """Remove every file of a call (its tombstone too, unless told otherwise)."""
        self._delete(self._path(function, "results", key))
        self._delete(self._path(function, "requests", key))
        for state in CALLBACK_STATES:
            self._delete(self._path(function, "callbacks", f"{key}.{state}"))
        for name in self._names(function, "leases"):
            if name.partition(".")[0] == key:
                self._delete(self._path(function, "leases", name))
        if tombstone:
            self._delete(self._path(function, "expired", key))

    def clean_up(self, function: str, older_than_s: float) -> None:
        """Remove the temporary files of writes cut short (a SIGKILL mid-write) that are older than
        ``older_than_s``; only ``file://`` writes them (an object store's PUT is whole or nothing)."""
        if not self.local:
            return
        cutoff = time.time() - older_than_s
        for folder in ("requests", "leases", "results", "callbacks", "expired"):
            for entry in self._entries(function, folder):
                name = str(entry["name"])
                if name.endswith(".tmp") and (_modified_at(entry) or cutoff) < cutoff:
                    self._delete(name)

    def functions(self) -> list[str]:
        """The functions that have a folder in this queue."""
        return sorted(self._names(None, None, folders=True))

    # --- primitives ---------------------------------------------------------------------------

    def _path(self, function: str, folder: str, name: str) -> str:
        return f"{self.root}/{function}/{folder}/{name}"

    @contextlib.contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        url = f"{self.url}{path[len(self.root) :]}"
        with self._store.storage_errors(url):
            try:
                yield
            except NotImplementedError:  # a file system that cannot do this (write, list, ...)
                raise StorageUnavailable(
                    f"storage at {redact_url(url)} cannot keep the queue ({type(self.fs).__name__} "
                    "does not support it): set [async] queue to a writable store"
                ) from None

    def _write(self, path: str, data: bytes, *, durable: bool = True) -> None:
        with self._errors(path):
            if not self.local:
                self.fs.pipe_file(path, data)  # one PUT: whole or not at all
                return
            folder = self._folder(path)
            temp = _temporary(path)
            _write_local(temp, data, durable)
            os.replace(temp, path)
            if durable:
                _sync_folder(folder)

    def _create(self, path: str, data: bytes, *, durable: bool = True) -> bool:
        with self._errors(path):
            if not self.local:
                try:
                    with _MEMORY_LOCK if isinstance(self.fs, MemoryFileSystem) else contextlib.nullcontext():
                        self.fs.pipe_file(path, data, mode="create")
                except FileExistsError:
                    return False
                return True
            folder = self._folder(path)
            temp = _temporary(path)
            _write_local(temp, data, durable)
            try:
                os.link(temp, path)  # atomic, and the file is whole when it appears
            except FileExistsError:
                return False
            finally:
                os.unlink(temp)
            if durable:
                _sync_folder(folder)
            return True

    def _read(self, path: str) -> bytes | None:
        with self._errors(path):
            try:
                data: bytes = self.fs.cat_file(path)
            except FileNotFoundError:
                return None
            return data

    def _exists(self, path: str) -> bool:
        with self._errors(path):
            return bool(self.fs.exists(path))

    def _delete(self, path: str) -> None:
        with self._errors(path), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def _entries(self, function: str | None, folder: str | None) -> list[dict[str, object]]:
        path = "/".join(p for p in (self.root, function, folder) if p)
        with self._errors(path):
            self.fs.invalidate_cache(path)  # object stores cache listings; the queue changes all the time
            try:
                return list(self.fs.ls(path, detail=True))
            except FileNotFoundError:
                return []

    def _names(self, function: str | None, folder: str | None, *, folders: bool = False) -> list[str]:
        wanted = "directory" if folders else "file"
        entries = self._entries(function, folder)
        names = (str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == wanted)
        return [name for name in names if not name.endswith(".tmp")]

    def _times(self, function: str, folder: str) -> dict[str, float | None]:
        times = {}
        for entry in self._entries(function, folder):
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "file" and not name.endswith(".tmp"):
                times[name] = _modified_at(entry)
        return times

    def _folder(self, path: str) -> str:
        folder = path.rsplit("/", 1)[0]
        if folder not in self._made:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        return folder


_written = itertools.count()


def _temporary(path: str) -> str:
    """A name beside ``path`` that no other write uses: this process's id and a count (a uuid4
    costs a read of the kernel's random source, for a name nobody guesses at)."""
    return f"{path}.{os.getpid()}-{next(_written)}.tmp"


def _write_local(path: str, data: bytes, durable: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _sync_folder(folder: str) -> None:
    """Make a rename or link in ``folder`` survive a power cut (the file's own fsync does not)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _modified_at(entry: dict[str, object]) -> float | None:
    """A listing entry's time as Unix seconds, under the name each backend gives it."""
    for key in ("mtime", "LastModified", "created", "updated", "last_modified"):
        value = entry.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.datetime.fromisoformat(value).timestamp()
    return None

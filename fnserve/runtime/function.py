"""One served function: its model in memory, its checkpoint version, and the sync call path.

Everything here is synchronous and runs in worker threads; the app and the batcher decide
when. A new model is loaded fully before it replaces the old one, and a failed load leaves
the old one serving. Following ``latest``, a start and a reload alike serve the newest version
that verifies and loads, passing over bad ones (:mod:`fnserve.runtime.versions`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fnserve.runtime.errors import CheckpointError, FnError, FunctionError, ModelError
from fnserve.runtime.loader import FoundFunction
from fnserve.runtime.models import preload
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.redact import redact_text, redact_url
from fnserve.runtime.store import Checkpoint, CheckpointStore
from fnserve.runtime.versions import SkippedVersion, skip_reason, with_retries

log = logging.getLogger("fnserve.function")

WARM_UP_ROWS = 64  # the largest warm-up batch (or max_batch_size, if smaller)


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    version: int | None  # checkpoint version; None for functions without a checkpoint
    url: str | None  # the version folder the model came from
    loaded_at: float  # unix time
    load_s: float  # fetch + load time, seconds
    metadata: Mapping[str, Any] = field(default_factory=dict)  # from the checkpoint manifest
    fetch_s: float = 0.0  # the part of load_s spent fetching (and verifying) the checkpoint
    path: str | None = None  # the verified local copy of the version folder
    warm_up_s: float = 0.0  # the part of load_s spent replaying representative rows (see _warm_up)
    import_s: float = 0.0  # the part of load_s spent importing the framework (see models.preload)

    @property
    def model_s(self) -> float:
        """The part of load_s the loader itself took: all but fetch, framework import, warm-up."""
        return self.load_s - self.fetch_s - self.import_s - self.warm_up_s


class ServedFunction:
    """A discovered function bound to a store; ``load()`` makes it ready.

    ``on_skip`` hears of every version passed over (once per version), to count it; ``on_load``
    of every model about to be served, before any batch can be computed by it.
    """

    def __init__(
        self,
        found: FoundFunction,
        store: CheckpointStore | None,
        version: str | None = None,
        *,
        on_skip: Callable[[str, SkippedVersion], None] | None = None,
        on_load: Callable[[str, LoadedModel], None] | None = None,
        warm_up: bool = True,
    ):
        """``warm_up``: replay a version's representative rows before it is served (``fn optimize``,
        which evaluates, times and records the model's inputs itself, loads without)."""
        self.found = found
        self.spec = found.spec
        self.name = found.spec.name
        self.schema = found.schema
        self.store = store
        self.wanted_version = version or found.spec.version  # "latest" follows new versions
        self.loaded: LoadedModel | None = None
        self.last_error: str | None = None
        self.skipped: dict[int, SkippedVersion] = {}  # versions newer than the loaded one, passed over
        self._on_skip = on_skip
        self._on_load = on_load
        self._load_lock = threading.Lock()
        self.warm_up = warm_up
        self.phase: tuple[str, float] | None = None  # what a load is doing now, since (monotonic)
        if self.spec.checkpoint is not None and store is None:
            raise FunctionError(f"{found.path}: function {self.name!r} needs a checkpoint store")

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    def load(self) -> LoadedModel:
        """Load the wanted checkpoint version; replaces the current model only on success.

        Following ``latest``, the published versions newer than the one in memory are tried newest
        first, and the first that verifies and loads is served (see :mod:`fnserve.runtime.versions`).
        A pinned version is that version or nothing: its failure is the error.
        """
        with self._load_lock:
            self._doing("listing the checkpoint's versions")
            try:
                if self.spec.loader is None or self.spec.checkpoint is None:
                    loaded = LoadedModel(None, None, None, time.time(), 0.0)
                elif self.wanted_version == "latest":
                    loaded = self._load_newest_good(self.spec.checkpoint)
                else:
                    loaded = self._load_version(self.spec.checkpoint, int(self.wanted_version))
                    self.last_error = None
            except FnError as exc:
                self.last_error = self._redact(exc.message)
                raise
            except Exception as exc:  # a storage backend's own error class: reported, retried later
                self.last_error = self._redact(f"loading {self.name!r} failed: {type(exc).__name__}: {exc}")
                log.exception("loading %s failed", self.name)
                raise CheckpointError(self.last_error) from exc
            finally:
                self.phase = None
            if loaded is not self.loaded and loaded.version is not None:
                log.info(
                    "%s: loaded checkpoint version %s in %.2fs", self.name, loaded.version, loaded.load_s
                )
            if loaded is not self.loaded and self._on_load is not None:
                self._on_load(self.name, loaded)
            self.loaded = loaded
            return loaded

    def _load_newest_good(self, checkpoint: str) -> LoadedModel:
        """The newest version above the loaded one that loads, or the loaded one if none does."""
        assert self.store is not None
        store, current = self.store, self.loaded
        floor = (current.version or 0) if current is not None else 0
        published = with_retries(lambda: store.versions(checkpoint), f"{self.name}: listing versions")
        if not published:
            raise store.none_published(checkpoint)
        for version in reversed(published):
            passed = self.skipped.get(version)
            if version <= floor or (passed is not None and passed.for_good):
                continue
            try:
                loaded = self._load_version(checkpoint, version)
            except FnError as exc:
                reason = skip_reason(exc)
                if reason is None:
                    raise  # the store, not the version: keep what is served, try again later
                self._skip(SkippedVersion(version, reason, self._redact(exc.message)))
                continue
            self._settle(loaded.version or 0)
            return loaded
        self._settle(floor)
        if current is not None:
            return current
        problems = "; ".join(f"version {s.version}: {s.describe()['error']}" for s in self._newest_first())
        raise CheckpointError(f"no version of checkpoint {checkpoint!r} verifies and loads ({problems})")

    def _skip(self, skipped: SkippedVersion) -> None:
        """Remember a version passed over; report it the first time (or when its reason changes)."""
        before = self.skipped.get(skipped.version)
        self.skipped = {**self.skipped, skipped.version: skipped}  # a new dict: describe() reads it meanwhile
        if before is not None and before.reason == skipped.reason:
            return
        until = "until a newer version is published" if skipped.for_good else "for now, retried later"
        log.error(
            "%s: checkpoint version %s not loaded (%s), skipped %s: %s",
            self.name,
            skipped.version,
            skipped.reason,
            until,
            skipped.describe()["error"],
        )
        if self._on_skip is not None:
            self._on_skip(self.name, skipped)

    def _settle(self, served: int) -> None:
        """Forget versions at or below the served one; the newest skipped one is the function's error."""
        self.skipped = {v: s for v, s in self.skipped.items() if v > served}
        newest = self._newest_first()
        self.last_error = f"version {newest[0].version}: {newest[0].error}" if newest else None

    def _newest_first(self) -> list[SkippedVersion]:
        return sorted(self.skipped.values(), key=lambda s: -s.version)

    def _load_version(self, checkpoint: str, version: int) -> LoadedModel:
        """Fetch (retrying a store that is briefly down) and load one version."""
        assert self.store is not None
        store, started = self.store, time.perf_counter()
        self._doing(f"fetching version {version}")
        fetched = with_retries(lambda: self._fetch(store, checkpoint, version), f"{self.name}: fetching")
        fetch_s = time.perf_counter() - started
        current = self.loaded
        if current is not None and current.version == fetched.version and current.url == fetched.url:
            return current
        assert self.spec.loader is not None
        self._doing("importing the framework")
        import_s = preload(fetched.path)
        self._doing(f"loading the model of version {version}")
        try:
            model = self.spec.loader(str(fetched.path))
        except Exception as exc:
            message = self._redact(f"loader of {self.name!r} failed: {type(exc).__name__}: {exc}")
            log.exception("loading %s version %s failed", self.name, version)
            raise FunctionError(f"{self.found.path}: {message}") from exc
        warm_up_s = self._warm_up(model, fetched.path, version)
        return LoadedModel(
            model,
            fetched.version,
            fetched.url,
            time.time(),
            time.perf_counter() - started,
            dict(fetched.manifest.metadata),
            fetch_s,
            str(fetched.path),
            warm_up_s,
            import_s,
        )

    def prepare(self) -> None:
        """What a standby replica does before it is asked to serve: fetch the version it would load
        into the local cache and import the framework that version runs on. Loading stays for
        :meth:`load`; a problem here is only logged, as the load that follows reports it properly."""
        if self.spec.loader is None or self.spec.checkpoint is None or self.store is None:
            return
        try:
            number = "latest" if self.wanted_version == "latest" else int(self.wanted_version)
            fetched = self._fetch(self.store, self.spec.checkpoint, number)
            seconds = preload(fetched.path)
        except Exception as exc:  # the store, a bad version: the load says it again, with its handling
            log.warning("%s: preparing the standby failed (the load will retry): %s", self.name, exc)
            return
        log.info(
            "%s: standby holds version %s, framework imported in %.2fs", self.name, fetched.version, seconds
        )

    def _warm_up(self, model: Any, folder: Path, version: int) -> float:
        """Before a version is served, run the function on its representative rows (the training
        inputs it was published with), at batch 1 and at a full batch: the first caller does not
        pay for graph tracing and first allocations. A version whose rows the function rejects, or
        answers wrongly, fails its load (never ready but broken). Seconds it took; 0 without rows."""
        from fnserve.runtime import evaluation  # the optimizer's data module; only loads pay for it

        what = f"the warm-up rows of version {version} (fnserve-representative.parquet)"
        if not self.warm_up:
            return 0.0
        self._doing(f"warming up version {version}")
        started = time.perf_counter()
        try:
            sample = evaluation.read_representative(folder)
            if sample is None:
                return 0.0
            columns = evaluation.served_columns(self.found.schema, sample, what)
            rows = len(next(iter(columns.values()))) if columns else 0
            for n in sorted({1, min(rows, self.spec.max_batch_size, WARM_UP_ROWS)} - {0}):
                part = {name: column[:n] for name, column in columns.items()}
                Outputs.of(self._invoke(model, part, n), n, self.name, version)
        except Exception as exc:
            said = exc.message if isinstance(exc, FnError) else f"{type(exc).__name__}: {exc}"
            message = self._redact(f"warm-up of {self.name!r} on {what} failed: {said}")
            log.exception("warming up %s version %s failed", self.name, version)
            raise FunctionError(f"{self.found.path}: {message}") from exc
        return time.perf_counter() - started

    def _doing(self, what: str) -> None:
        self.phase = (what, time.monotonic())

    def doing(self) -> str | None:
        """What the load in progress is doing, and for how long, e.g. "loading the model of
        version 3 (for 2.1 s)"; None when no load runs. A gateway names it in a 503."""
        phase = self.phase
        return None if phase is None else f"{phase[0]} (for {time.monotonic() - phase[1]:.1f} s)"

    @staticmethod
    def _fetch(store: CheckpointStore, checkpoint: str, version: int | str) -> Checkpoint:
        try:
            return store.fetch(checkpoint, version)
        except FnError:
            raise
        except OSError as exc:  # the local cache (a full disk): no fault of the version
            raise CheckpointError(f"could not fetch version {version} into the cache: {exc}") from exc

    def newer_version(self) -> int | None:
        """The store's latest version if it should be tried: newer than the loaded one, and not
        skipped for good (unless an older skipped one waits for its manifest). Only following latest."""
        if self.wanted_version != "latest" or self.spec.checkpoint is None or self.store is None:
            return None
        latest = self.store.latest(self.spec.checkpoint)
        current = (self.loaded.version or 0) if self.loaded else 0
        if latest is None or latest <= current:
            return None
        passed = self.skipped.get(latest)
        waiting = any(not s.for_good for s in self.skipped.values())
        return latest if passed is None or not passed.for_good or waiting else None

    def call(self, columns: dict[str, Any], n: int) -> Outputs:
        """Run the function on a batch of ``n`` instances (columns); returns their outputs.

        The model is read once: the whole batch is computed by that one snapshot, and the outputs
        carry its version to every request in the batch, whatever is swapped in meanwhile.
        """
        loaded = self.loaded
        if loaded is None:
            raise CheckpointError(f"function {self.name!r} has no model loaded", status=503)
        try:
            result = self._invoke(loaded.model, columns, n)
        except FnError:
            raise
        except Exception as exc:
            log.exception("function %s raised", self.name)
            raise ModelError(f"function {self.name!r} failed: {type(exc).__name__}") from exc
        return Outputs.of(result, n, self.name, loaded.version)

    def _invoke(self, model: Any, columns: dict[str, Any], n: int) -> Any:
        args = (model,) if self.spec.loader is not None else ()
        if self.spec.vectorized:
            return self.found.func(*args, **columns)
        return [self.found.func(*args, **_row(columns, i)) for i in range(n)]

    def describe(self) -> dict[str, Any]:
        loaded = self.loaded
        return {
            "name": self.name,
            "description": self.spec.description,
            "ready": loaded is not None,
            "checkpoint": redact_url(self.spec.checkpoint) if self.spec.checkpoint else None,
            "version": loaded.version if loaded else None,
            "wanted_version": self.wanted_version if self.spec.checkpoint else None,
            "available_versions": self._versions(),
            "metrics": dict(loaded.metadata.get("metrics", {})) if loaded else {},
            # what `fn optimize` made this version from (base version, technique, settings); None: trained
            "lineage": loaded.metadata.get("lineage") if loaded else None,
            "error": self.last_error,
            # newer versions passed over: corrupt, failing to load, or not fully published yet
            "skipped_versions": [s.describe() for s in self._newest_first()],
            # what the last load took: a gateway reports them as parts of a cold start
            "fetch_s": round(loaded.fetch_s, 4) if loaded else None,
            "framework_import_s": round(loaded.import_s, 4) if loaded else None,
            "model_load_s": round(loaded.model_s, 4) if loaded else None,
            "warm_up_s": round(loaded.warm_up_s, 4) if loaded else None,
            "max_batch_size": self.spec.max_batch_size,
            **self.schema.describe(),
        }

    def _redact(self, text: str) -> str:
        """A message as status may show it: without the store's (or a checkpoint URL's) credentials."""
        return self.store.redact(text) if self.store is not None else redact_text(text)

    def _versions(self) -> list[int]:
        if self.spec.checkpoint is None or self.store is None:
            return []
        try:
            return self.store.versions(self.spec.checkpoint)
        except CheckpointError:
            return []


def _row(columns: dict[str, Any], i: int) -> dict[str, Any]:
    """Instance ``i`` as plain Python values, for functions written one instance at a time."""
    return {
        k: (v[i].item() if isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype != object else v[i])
        for k, v in columns.items()
    }

"""One served function: its model in memory, its checkpoint version, and the sync call path.

Everything here is synchronous and runs in worker threads; the app and the batcher decide
when. A new model is loaded fully before it replaces the old one, and a failed load leaves
the old one serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fnserve.runtime.errors import CheckpointError, FnError, FunctionError, ModelError
from fnserve.runtime.loader import FoundFunction
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.redact import redact_text, redact_url
from fnserve.runtime.store import CheckpointStore

log = logging.getLogger("fnserve.function")


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    version: int | None  # checkpoint version; None for functions without a checkpoint
    url: str | None  # the version folder the model came from
    loaded_at: float  # unix time
    load_s: float  # fetch + load time, seconds
    metadata: Mapping[str, Any] = field(default_factory=dict)  # from the checkpoint manifest
    fetch_s: float = 0.0  # the part of load_s spent fetching (and verifying) the checkpoint


class ServedFunction:
    """A discovered function bound to a store; ``load()`` makes it ready."""

    def __init__(self, found: FoundFunction, store: CheckpointStore | None, version: str | None = None):
        self.found = found
        self.spec = found.spec
        self.name = found.spec.name
        self.schema = found.schema
        self.store = store
        self.wanted_version = version or found.spec.version  # "latest" follows new versions
        self.loaded: LoadedModel | None = None
        self.last_error: str | None = None
        self._load_lock = threading.Lock()
        if self.spec.checkpoint is not None and store is None:
            raise FunctionError(f"{found.path}: function {self.name!r} needs a checkpoint store")

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    def load(self) -> LoadedModel:
        """Fetch the wanted checkpoint and load it; replaces the current model only on success."""
        with self._load_lock:
            started = time.perf_counter()
            try:
                loaded = self._load_once(started)
            except FnError as exc:
                self.last_error = self._redact(exc.message)
                raise
            except Exception as exc:
                self.last_error = self._redact(f"loader of {self.name!r} failed: {type(exc).__name__}: {exc}")
                log.exception("loading %s failed", self.name)
                raise FunctionError(f"{self.found.path}: {self.last_error}") from exc
            self.loaded, self.last_error = loaded, None
            if loaded.version is not None:
                log.info(
                    "%s: loaded checkpoint version %s in %.2fs", self.name, loaded.version, loaded.load_s
                )
            return loaded

    def _load_once(self, started: float) -> LoadedModel:
        if self.spec.loader is None or self.spec.checkpoint is None:
            return LoadedModel(None, None, None, time.time(), 0.0)
        assert self.store is not None
        checkpoint = self.store.fetch(self.spec.checkpoint, self.wanted_version)
        fetched = time.perf_counter()
        current = self.loaded
        if current is not None and current.version == checkpoint.version and current.url == checkpoint.url:
            return current
        model = self.spec.loader(str(checkpoint.path))
        return LoadedModel(
            model,
            checkpoint.version,
            checkpoint.url,
            time.time(),
            time.perf_counter() - started,
            dict(checkpoint.manifest.metadata),
            fetched - started,
        )

    def newer_version(self) -> int | None:
        """The store's latest version if it is newer than the loaded one (only when following latest)."""
        if self.wanted_version != "latest" or self.spec.checkpoint is None or self.store is None:
            return None
        latest = self.store.latest(self.spec.checkpoint)
        current = self.loaded.version if self.loaded else None
        return latest if latest is not None and (current is None or latest > current) else None

    def call(self, columns: dict[str, Any], n: int) -> Outputs:
        """Run the function on a batch of ``n`` instances (columns); returns their outputs.

        The model is read once: the whole batch is computed by that one snapshot, and the outputs
        carry its version to every request in the batch, whatever is swapped in meanwhile.
        """
        loaded = self.loaded
        if loaded is None:
            raise CheckpointError(f"function {self.name!r} has no model loaded", status=503)
        args = (loaded.model,) if self.spec.loader is not None else ()
        try:
            if self.spec.vectorized:
                result = self.found.func(*args, **columns)
            else:
                result = [self.found.func(*args, **_row(columns, i)) for i in range(n)]
        except FnError:
            raise
        except Exception as exc:
            log.exception("function %s raised", self.name)
            raise ModelError(f"function {self.name!r} failed: {type(exc).__name__}") from exc
        return Outputs.of(result, n, self.name, loaded.version)

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
            "error": self.last_error,
            # what the last load took: a gateway reports them as parts of a cold start
            "fetch_s": round(loaded.fetch_s, 4) if loaded else None,
            "model_load_s": round(loaded.load_s - loaded.fetch_s, 4) if loaded else None,
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

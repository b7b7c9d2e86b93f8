"""The runtime's life: load models in the background, follow new versions, drain on exit.

The process is live at once and ready when every function's model is in memory. Storage
that is down (or a checkpoint not yet published) keeps it live but not ready; loading is
retried with backoff until it works. While following ``latest``, a newer version is loaded
beside the old one and swapped in only when it loaded; a failed load keeps the old one. A start
and a reload alike pass over bad versions to the newest good one (see ServedFunction.load).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

from fnserve.runtime.batcher import Batcher
from fnserve.runtime.capture import Capture, settings_beside
from fnserve.runtime.codec import Inputs
from fnserve.runtime.dashboard.series import RecentStats, version_label
from fnserve.runtime.errors import FnError, NotFound, NotReady, Timeout, VersionChanged
from fnserve.runtime.function import LoadedModel, ServedFunction
from fnserve.runtime.loader import FoundFunction
from fnserve.runtime.lookup import Found, Shortcuts
from fnserve.runtime.metrics import Metrics
from fnserve.runtime.monitor import Monitor, MonitorConfig
from fnserve.runtime.monitor.exporter import DriftCollector
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.redact import register_secrets
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import CheckpointStore

log = logging.getLogger("fnserve.runtime")

RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0


class Runtime:
    """Every served function of one process, with its batcher, and the process's readiness."""

    def __init__(
        self,
        found: Iterable[FoundFunction],
        settings: Settings,
        *,
        versions: dict[str, str] | None = None,
        standby: bool = False,
        timeline: dict[str, float] | None = None,
    ):
        """``standby``: fetch and import now, load only once :meth:`activate` is called (SIGUSR1);
        ``timeline``: when the process's start reached each step before this (unix times), for
        ``GET /functions``."""
        self.settings = settings
        self.store = CheckpointStore(
            settings.store, storage_options=dict(settings.storage_options), cache_dir=settings.cache_dir
        )
        versions = versions or {}
        found = list(found)
        self.metrics = Metrics()
        # [monitor] of each function.toml, read now: a malformed one stops the start, naming the key
        self.monitor = Monitor((f.spec.name, f.schema, MonitorConfig.of_function(f.path)) for f in found)
        self.metrics.registry.register(DriftCollector(self.monitor))
        self.recent = RecentStats()  # the dashboard's figures of the last minutes
        # [table] and [cache] of each function.toml, read now: a bad setting stops the start
        self.shortcuts = {f.spec.name: Shortcuts(f, self.metrics) for f in found}
        self.functions: dict[str, ServedFunction] = {
            f.spec.name: ServedFunction(
                f,
                self.store,
                versions.get(f.spec.name),
                on_skip=self.metrics.count_skip,
                on_load=self._loaded,
            )
            for f in found
        }
        self.capture = Capture(self.metrics.registry)  # a sampled share of requests, as Parquet
        for f in found:
            options = settings.storage_options
            self.capture.add(
                f.spec.name, f.schema, settings_beside(f.path), settings.store, options, settings.project_dir
            )
        self.batchers: dict[str, Batcher] = {}
        self.draining = False
        self.started_at = time.time()
        # unix times of the start's steps: process, runtime_imported, function_imported (from the
        # entry point), activated (a standby asked to serve), ready — what a cold start is made of
        self.timeline: dict[str, float] = {**(timeline or {}), "runtime_created": self.started_at}
        self.standby = standby
        self._activate = asyncio.Event()
        self._became_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # requests in the server now (the app sets it): a lone one may run on the loop (batcher)
        self.requests_in_flight: Callable[[], int] = lambda: 1

    @property
    def ready(self) -> bool:
        return not self.draining and all(f.ready for f in self.functions.values())

    def function(self, name: str) -> ServedFunction:
        try:
            return self.functions[name]
        except KeyError:
            raise NotFound(f"no function named {name!r}; see GET /functions") from None

    def batcher(self, fn: ServedFunction) -> Batcher:
        batcher = self.batchers.get(fn.name)
        if batcher is None:

            def call(columns: dict[str, Any], n: int, fn: ServedFunction = fn) -> Outputs:
                self.metrics.batch_size.labels(fn.name).observe(n)
                outputs = fn.call(columns, n)
                self.recent.batch(fn.name, version_label(outputs.version), n)
                self.monitor.observe(fn.name, columns, outputs)  # in this model thread, once per batch
                return outputs

            target_ms = fn.spec.latency_target_ms
            batcher = Batcher(
                fn.schema,
                call,
                max_batch_size=fn.spec.max_batch_size,
                max_concurrency=fn.spec.max_concurrency,
                max_queue_instances=fn.spec.max_queue,
                latency_target_s=None if target_ms is None else target_ms / 1000,
                inline_max_s=self.settings.lone_call_max_ms / 1000,
                alone=lambda: self.requests_in_flight() <= 1,
                on_inline=self.metrics.lone_calls.labels(fn.name).inc,
            )
            self.batchers[fn.name] = batcher
        return batcher

    def _loaded(self, name: str, loaded: LoadedModel) -> None:
        """A model is about to be served: read its lookup table; profile its version against its
        reference from now on."""
        try:
            self.shortcuts[name].loaded(loaded, self.functions[name].loaded)
        except Exception:  # a table that cannot be read leaves the model to answer
            log.exception("%s: the lookup table of version %s failed to load", name, loaded.version)
        try:
            self.monitor.loaded(name, loaded.version, loaded.path)
        except Exception:  # monitoring never stands between a model and its traffic
            log.exception("%s: monitoring version %s failed to start", name, loaded.version)

    def resolve(self, target: str) -> tuple[ServedFunction, int | None, int | None]:
        """``name`` or ``name@version`` to a ready function, the version in memory now, and the
        pinned version (None: unpinned), which must be the one in memory.

        The version in memory now is only for answers given without the model (a 304): a model
        may be swapped in before the request is computed, so a prediction is labelled with the
        version its :class:`Outputs` carry.
        """
        name, _, wanted = target.partition("@")
        fn = self.function(name)
        loaded = fn.loaded
        if loaded is None:
            raise NotReady(f"function {name!r} is not ready yet (its model is loading); retry shortly")
        if wanted and wanted != str(loaded.version):
            raise NotFound(
                f"version {wanted!r} of {name!r} is not served here (serving version {loaded.version})"
            )
        return fn, loaded.version, loaded.version if wanted else None

    def from_memory(
        self, fn: ServedFunction, columns: Inputs, n: int, pinned: int | None = None
    ) -> Found | None:
        """The rows the version's lookup table or the result cache hold, looked up now, on the
        loop (``found.outputs``: every row found); None for a function with neither."""
        shortcuts = self.shortcuts[fn.name]
        return shortcuts.lookup(fn, columns, n, pinned) if shortcuts.active else None

    async def predict(
        self,
        fn: ServedFunction,
        columns: Inputs,
        n: int,
        pinned: int | None = None,
        found: Found | None = None,
    ) -> Outputs:
        """Run ``n`` validated rows through the function's batcher; the outputs carry the version
        that computed them. A ``pinned`` request computed by another version (swapped in while it
        queued) fails with 404 rather than be answered by a model it did not ask for. Rows held by
        the version's lookup table or the result cache are answered without the model (``found``:
        what :meth:`from_memory` found already).
        """
        if found is None:
            found = self.from_memory(fn, columns, n, pinned)
        if found is None:
            return await self._model_predict(fn, columns, n, pinned)
        if found.outputs is not None:
            return found.outputs
        return await self.shortcuts[fn.name].complete(fn, columns, n, pinned, found, self._model_predict)

    async def _model_predict(
        self, fn: ServedFunction, columns: Inputs, n: int, pinned: int | None = None
    ) -> Outputs:
        """:meth:`predict` by the model, through the function's batcher."""
        started = time.perf_counter()
        batcher = self.batcher(fn)
        try:
            outputs = await batcher.submit(columns, n, fn.spec.timeout_s)
        except VersionChanged:
            if pinned is not None:
                raise self._replaced(fn, pinned) from None
            # A swap came between the model calls of a large request: once more, by one model.
            remaining_s = fn.spec.timeout_s - (time.perf_counter() - started)
            if remaining_s <= 0:
                raise Timeout(f"no answer within the deadline of {fn.spec.timeout_s:g}s") from None
            outputs = await batcher.submit(columns, n, remaining_s)
        if pinned is not None and outputs.version != pinned:
            raise self._replaced(fn, pinned)
        self.metrics.count_instances(fn.name, outputs.version, n)
        return outputs

    @staticmethod
    def _replaced(fn: ServedFunction, pinned: int) -> NotFound:
        serving = fn.loaded.version if fn.loaded is not None else None
        return NotFound(
            f"version '{pinned}' of {fn.name!r} was replaced by version {serving} before this request "
            "was computed; it is not served here any more"
        )

    async def start(self) -> None:
        """Start background loading; returns at once (liveness does not wait for models).
        A standby fetches and imports first, and loads once :meth:`activate` is called."""
        # Before the first load: every log line from here on hides the store's credentials.
        register_secrets(self.settings.secrets())
        loop = asyncio.get_running_loop()
        for fn in self.functions.values():
            self.metrics.ready.labels(fn.name).set(0)
        if self.standby:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(signal.SIGUSR1, self.activate)
            self._tasks.append(loop.create_task(self._stand_by(), name="standby"))
        else:
            self._start_loading()
        self.capture.start()

    def _start_loading(self) -> None:
        loop = asyncio.get_running_loop()
        for fn in self.functions.values():
            self._tasks.append(loop.create_task(self._keep_loaded(fn), name=f"load-{fn.name}"))

    async def _stand_by(self) -> None:
        """Fetch each function's version and import its framework, then wait to be activated.
        No fork is involved: the process that imported TensorFlow is the one that serves, so its
        thread pools (started here, by the framework's first op) are never copied into a child."""
        prepared = time.perf_counter()
        for fn in self.functions.values():
            await asyncio.to_thread(fn.prepare)
        refreeze_heap(replaced=False)  # the framework's objects: out of the collector's reach now
        self.timeline["prepared"] = time.time()
        log.info(
            "standby: prepared in %.2fs; SIGUSR1 makes it load and serve", time.perf_counter() - prepared
        )
        await self._activate.wait()
        self._start_loading()

    def activate(self) -> None:
        """A standby's signal to serve: load the models now (SIGUSR1 calls this). Idempotent."""
        if self.standby and not self._activate.is_set():
            self.timeline["activated"] = time.time()
            log.info("standby: activated, loading")
            self._activate.set()

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Whether the runtime became ready within ``timeout_s`` (None: however long it takes);
        returns the moment it does, without polling."""
        if self.ready:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._became_ready.wait()
        except TimeoutError:
            return False
        return self.ready

    async def _keep_loaded(self, fn: ServedFunction) -> None:
        delay = RETRY_MIN_S
        while not fn.ready:
            if await self._try_load(fn):
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        while True:  # follow `latest`
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                newer = await asyncio.to_thread(fn.newer_version)
            except FnError as exc:
                log.warning("%s: checking for a newer version failed: %s", fn.name, exc.message)
                continue
            if newer is not None:
                if newer not in fn.skipped:
                    log.info("%s: version %s published, loading it", fn.name, newer)
                # A bad version is skipped by the function; a store that is down is retried next time.
                await self._try_load(fn)

    async def _try_load(self, fn: ServedFunction) -> bool:
        before = fn.loaded
        try:
            loaded = await asyncio.to_thread(fn.load)
        except FnError as exc:
            log.error("%s: not loaded: %s", fn.name, exc.message)
            return False
        if loaded is before:
            return True  # nothing newer loaded: the versions tried were skipped
        refreeze_heap(replaced=before is not None)
        if self.ready and not self._became_ready.is_set():
            self.timeline["ready"] = time.time()
            self._became_ready.set()
            self._export_start()
        self.metrics.ready.labels(fn.name).set(1)
        self.metrics.version.labels(fn.name).set(loaded.version or 0)
        self.metrics.load_seconds.labels(fn.name).set(loaded.load_s)
        return True

    def _export_start(self) -> None:
        """This process's start in parts, as gauges (the gateway records each cold start's too)."""
        t, gauge = self.timeline, self.metrics.start_seconds
        began = t.get("activated", t.get("process", self.started_at))
        if "activated" not in t:
            gauge.labels("import").set(max(0.0, t.get("function_imported", began) - began))
        parts = {"fetch": "fetch_s", "framework": "import_s", "load": "model_s", "warm_up": "warm_up_s"}
        for part, attribute in parts.items():
            seconds = sum(getattr(f.loaded, attribute) for f in self.functions.values() if f.loaded)
            gauge.labels(part).set(max(0.0, seconds))
        gauge.labels("ready").set(max(0.0, t["ready"] - began))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for batcher in self.batchers.values():
            await batcher.close()
        # What was captured is written, within the drain timeout; a stuck sink does not hold the exit.
        await asyncio.to_thread(self.capture.stop, self.settings.drain_timeout_s)


def refreeze_heap(*, replaced: bool = True) -> None:
    """Keep long-lived objects (TensorFlow, the models) out of the cyclic collector's reach.

    After a model loads, the collector tracks hundreds of thousands of objects, and the request
    path allocates fast enough to set off full collections that walk them all: measured, those
    pauses (up to ~200 ms) were the p99 of fast predictions and ~40% of their CPU. Frozen objects
    are never collected, so unfreeze first: a replaced model's objects are freed, then what stays
    is frozen again. Runs once per load, not per request. The first load replaced nothing: what
    is frozen already (a standby's framework, frozen once imported) stays so, and the collection
    walks only what came since — a cold start's saving.
    """
    if replaced:
        gc.unfreeze()
    gc.collect()
    gc.freeze()

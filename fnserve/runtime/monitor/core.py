"""Live profiles of every served function and version, and their drift against the reference.

The runtime tells the monitor when a version is loaded (:meth:`Monitor.loaded`, in the loading
thread: the reference file is read and checked there) and hands it every computed batch
(:meth:`Monitor.observe`, in the model thread, after the model call). Observing a batch bins
each feature's column with numpy and adds all of them with one ``bincount`` into the window of
the version that computed it: no per-request work. Small batches (a lone request's, often
computed on the event loop's own turn) are gathered first and binned together once
``GATHER_ROWS`` rows or ``GATHER_S`` have come (and before any read): binning costs the same
for 1 row as for 64. A failure here is logged once and never fails a prediction.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fnserve.runtime.codec import stack_parts
from fnserve.runtime.monitor import reference as references
from fnserve.runtime.monitor.config import MonitorConfig
from fnserve.runtime.monitor.features import Feature, summaries
from fnserve.runtime.monitor.report import feature_entry, window_entry
from fnserve.runtime.monitor.window import Window
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.schema import Schema

log = logging.getLogger("fnserve.monitor")
MAX_VERSIONS = 3  # profiles kept per function: the served version and the ones it replaced
SMALL_BATCH = 16  # batches of at most this many rows are gathered before they are binned
GATHER_ROWS = 64  # ... until this many rows have come
GATHER_S = 1.0  # ... or this long has passed since the first of them


@dataclass
class VersionProfile:
    """One version's features (from its reference) and its live window."""

    version: int | None
    reference: references.Reference | None
    note: str | None  # "no reference", or why the reference is ignored
    window: Window
    offsets: list[int] = field(default_factory=list)  # where each feature's slots start in the window

    @classmethod
    def of(
        cls, version: int | None, ref: references.Reference | None, note: str | None, config: MonitorConfig
    ) -> VersionProfile:
        features = ref.features if ref is not None else ()
        offsets, width = [], 0
        for f in features:
            offsets.append(width)
            width += f.bins + 2  # then a slot for missing values, and one for defaulted inputs
        window = Window(width, seconds=config.window_s, count=config.window_count)
        return cls(version, ref, note, window, offsets)

    @property
    def features(self) -> tuple[Feature, ...]:
        return self.reference.features if self.reference is not None else ()

    def observe(self, columns: Mapping[str, Any], outputs: Outputs) -> None:
        parts = []
        n = outputs.n
        summary: dict[str, dict[str, np.ndarray]] = {}  # a tensor's mean and std, computed once
        for feature, offset in zip(self.features, self.offsets, strict=True):
            column = _column(feature, columns, outputs)
            if column is None:  # an output the model did not return this time: missing
                parts.append(np.full(n, offset + feature.bins, dtype=np.int64))
                continue
            if feature.type == "tensor" and feature.source not in summary:
                summary[feature.source] = summaries(column)
            parts.append(feature.indices(column, summary.get(feature.source)) + offset)
        if not parts:  # no reference: the window still counts the traffic
            self.window.add(np.zeros(0, dtype=np.int64), n)
            return
        counts = np.bincount(np.concatenate(parts), minlength=self.window.width)
        defaulted = getattr(columns, "defaulted", None)  # codec.Columns: rows each default filled
        if defaulted:
            for feature, offset in zip(self.features, self.offsets, strict=True):
                if feature.role == "input":
                    counts[offset + feature.bins + 1] += defaulted.get(feature.source, 0)
        self.window.add(counts, n)

    def describe(self, config: MonitorConfig) -> dict[str, Any]:
        samples, counts = self.window.totals()
        entries = []
        for i, (feature, offset) in enumerate(zip(self.features, self.offsets, strict=True)):
            assert self.reference is not None
            live = counts[offset : offset + feature.bins]
            entries.append(
                feature_entry(
                    name=feature.name,
                    role=feature.role,
                    kind=feature.type,
                    bins=feature.labels(),
                    reference=[round(float(s), 6) for s in self.reference.shares(i)],
                    counts=live,
                    missing=counts[offset + feature.bins],
                    defaulted=counts[offset + feature.bins + 1],
                    outside=feature.outside(np.asarray(live)),
                    samples=samples,
                    min_samples=config.min_samples,
                    psi_threshold=config.psi_threshold,
                    js_threshold=config.js_threshold,
                )
            )
        return {
            "reference": self.reference is not None,
            "note": self.note,
            "window": window_entry(config, samples),
            "features": entries,
        }


def _column(feature: Feature, columns: Mapping[str, Any], outputs: Outputs) -> Any:
    if feature.role == "input":
        return columns.get(feature.source)
    if outputs.named is not None:
        return outputs.named.get(feature.source)
    return outputs.value if feature.source == "" else None


class FunctionMonitor:
    def __init__(self, name: str, schema: Schema, config: MonitorConfig):
        self.name, self.schema, self.config = name, schema, config
        self.versions: collections.OrderedDict[int | None, VersionProfile] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._failed = False
        self._pending: list[tuple[Mapping[str, Any], Outputs]] = []  # small batches, not binned yet
        self._pending_rows = 0
        self._pending_since = 0.0

    def loaded(self, version: int | None, folder: str | None) -> None:
        """A version is in memory: read its reference (or say why there is none) and profile it."""
        if version in self.versions:
            return
        ref, note = references.read(folder)
        if ref is not None:
            problem = references.check_inputs(ref, self.schema)
            if problem is not None:
                note = f"the reference does not match the function's inputs ({problem}); ignored"
                ref = None
        if note not in (None, "no reference"):
            log.warning("%s version %s: %s", self.name, version, note)
        profile = VersionProfile.of(version, ref, note, self.config)
        with self._lock:
            self.versions[version] = profile
            while len(self.versions) > MAX_VERSIONS:
                self.versions.popitem(last=False)

    def observe(self, columns: Mapping[str, Any], outputs: Outputs) -> None:
        if outputs.version not in self.versions:
            return
        if outputs.n > SMALL_BATCH:
            self._observe([(columns, outputs)])
            return
        now = time.monotonic()
        with self._lock:
            if not self._pending:
                self._pending_since = now
            self._pending.append((columns, outputs))
            self._pending_rows += outputs.n
            if self._pending_rows < GATHER_ROWS and now - self._pending_since < GATHER_S:
                return
            pending = self._take()
        self._observe(pending)

    def flush(self) -> None:
        """Bin the gathered small batches now (a read is about to look at the windows)."""
        with self._lock:
            pending = self._take()
        self._observe(pending)

    def _take(self) -> list[tuple[Mapping[str, Any], Outputs]]:
        pending, self._pending, self._pending_rows = self._pending, [], 0
        return pending

    def _observe(self, batches: list[tuple[Mapping[str, Any], Outputs]]) -> None:
        """Bin batches, those of one version together (the order of the gathered ones kept)."""
        by_version: dict[int | None, list[tuple[Mapping[str, Any], Outputs]]] = {}
        for batch in batches:
            by_version.setdefault(batch[1].version, []).append(batch)
        for version, group in by_version.items():
            profile = self.versions.get(version)
            if profile is None:
                continue
            try:
                if len(group) == 1:
                    profile.observe(*group[0])
                else:
                    columns = stack_parts(self.schema, [c for c, _ in group])
                    profile.observe(columns, Outputs.concat([o for _, o in group]))
            except Exception:  # a column the bins cannot read: monitoring stops short, predictions don't
                if not self._failed:
                    self._failed = True
                    log.exception("%s: profiling a batch failed; its drift scores may lag", self.name)

    def describe(self) -> dict[str, Any]:
        self.flush()
        with self._lock:
            profiles = list(self.versions.values())
        return {"versions": {str(p.version or 0): p.describe(self.config) for p in profiles}}


class Monitor:
    """Every function's monitor; disabled functions (``[monitor] enabled = false``) are left out."""

    def __init__(self, functions: Iterable[tuple[str, Schema, MonitorConfig]]):
        found = list(functions)
        self.functions = {name: FunctionMonitor(name, s, c) for name, s, c in found if c.enabled}
        self.disabled = sorted(name for name, _, c in found if not c.enabled)

    def loaded(self, function: str, version: int | None, folder: str | None) -> None:
        monitor = self.functions.get(function)
        if monitor is not None:
            monitor.loaded(version, folder)

    def observe(self, function: str, columns: Mapping[str, Any], outputs: Outputs) -> None:
        monitor = self.functions.get(function)
        if monitor is not None:
            monitor.observe(columns, outputs)

    def describe(self, function: str | None = None) -> dict[str, Any]:
        names = [function] if function is not None else sorted([*self.functions, *self.disabled])
        off = {"versions": {}, "note": "monitoring is off ([monitor] enabled = false)"}
        return {"functions": {n: self.functions[n].describe() if n in self.functions else off for n in names}}

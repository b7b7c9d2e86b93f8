"""Payload capture: a sampled share of requests and answers, written as Parquet in the background.

Off unless a function's ``function.toml`` sets a rate::

    # functions/recs/function.toml
    [monitor]
    capture_rate = 0.1            # share of rows captured, 0..1 (default 0: off)
    capture_flush_rows = 10000    # a file is written once this many rows wait...
    capture_flush_s = 10.0        # ...or once the oldest has waited this long
    capture_max_rows = 100000     # rows waiting at most; past it rows are dropped, never waited for
    capture_max_mb = 256          # and at most this much of their inputs' arrays (images are large)
    capture_url = "s3://bucket/capture"   # default: <store>/_capture

Files land under ``<root>/function=NAME/version=V/date=YYYY-MM-DD/part-<time>-<id>.parquet``
(hive partitions; ``version=0``: no checkpoint), one column per input and output (an output named
like an input is ``output_<name>``) plus ``_request_id``, ``_latency_s`` and ``_time``::

    pyarrow.dataset.dataset("capture/", format="parquet", partitioning="hive").to_table()

The request path only samples (a numpy mask for a batch) and appends references to the sampled
rows to a bounded queue; stacking them into Arrow and writing happen in one background thread.
A slow, full or failing sink never slows or fails a request: its rows are dropped and counted in
``fnserve_capture_dropped_rows_total{function,reason}`` (``queue_full``, ``write_failed``), and a
failing sink is logged once per outage.
"""

from __future__ import annotations

import collections
import datetime
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Counter

from fnserve.runtime.codec import Inputs, Rows, to_columns
from fnserve.runtime.config import function_section
from fnserve.runtime.errors import ConfigError
from fnserve.runtime.outputs import Outputs, concat_column
from fnserve.runtime.protocols.arrow import output_columns, to_arrow
from fnserve.runtime.redact import redact_text
from fnserve.runtime.schema import Schema

log = logging.getLogger("fnserve.capture")

SECTION = "monitor"
DEFAULT_DIR = "_capture"  # under the store root
META_COLUMNS = ("_request_id", "_latency_s", "_time")
ROW_BYTES = 256  # what a row of Python values (a GET's instance, a list column) is taken to hold


@dataclass(frozen=True)
class CaptureSettings:
    rate: float = 0.0  # share of rows captured, 0..1; 0: capture is off
    flush_rows: int = 10_000  # write a file once this many rows wait
    flush_s: float = 10.0  # or once the oldest waiting row is this old
    max_rows: int = 100_000  # bound of the queue, in rows; more are dropped (counted)
    max_mb: float = 256.0  # bound of the queue, in MB of input and output arrays held
    url: str | None = None  # fsspec URL of the capture root; None: <store>/_capture

    @property
    def enabled(self) -> bool:
        return self.rate > 0


_KEYS = {
    "capture_rate",
    "capture_flush_rows",
    "capture_flush_s",
    "capture_max_rows",
    "capture_max_mb",
    "capture_url",
}


def capture_settings(table: Mapping[str, Any], where: str = f"[{SECTION}]") -> CaptureSettings:
    """The ``capture_*`` keys of a ``[monitor]`` table, checked; other keys are not ours.

    >>> capture_settings({"capture_rate": 0.25, "window_s": 60})
    CaptureSettings(rate=0.25, flush_rows=10000, flush_s=10.0, max_rows=100000, max_mb=256.0, url=None)
    >>> capture_settings({"capture_rate": 2})
    Traceback (most recent call last):
    fnserve.runtime.errors.ConfigError: [monitor] capture_rate must be a number from 0 to 1, got 2
    """
    unknown = sorted(k for k in table if k.startswith("capture_") and k not in _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(_KEYS)}")
    default = CaptureSettings()
    rate = _number(table, "capture_rate", default.rate, where, 0.0, 1.0, "a number from 0 to 1")
    flush_rows = _integer(table, "capture_flush_rows", default.flush_rows, where)
    flush_s = _number(table, "capture_flush_s", default.flush_s, where, 0.001, None, "a positive number")
    max_rows = _integer(table, "capture_max_rows", default.max_rows, where)
    max_mb = _number(table, "capture_max_mb", default.max_mb, where, 0.001, None, "a positive number")
    url = table.get("capture_url")
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise ConfigError(f"{where} capture_url must be a non-empty URL string, got {url!r}")
    return CaptureSettings(float(rate), flush_rows, float(flush_s), max_rows, max_mb, url)


def _number(
    table: Mapping[str, Any], key: str, default: float, where: str, low: float, high: float | None, what: str
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} {key} must be {what}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{where} {key} must be {what}, got {value!r}")
    return float(value)


def _integer(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} {key} must be a positive integer, got {value!r}")
    return value


def settings_beside(predict_file: Path) -> CaptureSettings:
    """The capture settings in the ``function.toml`` beside a function's file (defaults: none)."""
    return capture_settings(*function_section(predict_file, SECTION))


@dataclass(eq=False, slots=True)
class _Item:
    """One request's sampled rows, as the request path left them."""

    inputs: Inputs
    outputs: Outputs
    n: int
    size: int  # bytes held, as estimated by _nbytes
    request_id: str
    latency_s: float
    at: float  # unix time


class _Channel:
    """One function's queue, destination and state of its sink."""

    def __init__(
        self, name: str, schema: Schema, settings: CaptureSettings, root: str, options: Mapping[str, Any]
    ):
        self.name, self.schema, self.settings = name, schema, settings
        self.root = root.rstrip("/")
        self.options = dict(options)
        self.items: collections.deque[_Item] = collections.deque()
        self.queued = 0  # rows in items
        self.queued_bytes = 0  # bytes of the arrays they hold (as estimated by _nbytes)
        self.max_bytes = int(settings.max_mb * 1e6)
        self.lock = threading.Lock()
        self.failing = False  # a write failed and none has worked since: logged once
        self.fs: Any = None  # opened by the writer thread on its first write
        self.path = ""  # the root as a path of that filesystem


class Capture:
    """Every captured function of one runtime, and the one thread that writes their files."""

    def __init__(self, registry: CollectorRegistry, *, clock: Any = time.time):
        self.rows = Counter(
            "fnserve_capture_rows",
            "Rows of captured requests written",
            ["function", "version"],
            registry=registry,
        )
        self.dropped = Counter(
            "fnserve_capture_dropped_rows",
            "Sampled rows not captured, by why: queue_full (the sink is behind) or write_failed",
            ["function", "reason"],
            registry=registry,
        )
        self._channels: dict[str, _Channel] = {}
        self._full: dict[str, Any] = {}  # the queue_full child per function, looked up once
        self._clock = clock
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._channels)

    def add(
        self,
        name: str,
        schema: Schema,
        settings: CaptureSettings,
        store: str,
        options: Mapping[str, Any],
        project_dir: Path,
    ) -> None:
        """Capture ``name`` as ``settings`` say (nothing when the rate is 0); under ``store``
        (with its fsspec ``options``) unless they name a URL (a plain path: project-relative)."""
        if not settings.enabled:
            return
        root = settings.url or f"{store.rstrip('/')}/{DEFAULT_DIR}"
        if "://" not in root:
            root = (project_dir / root).resolve().as_uri()
        same_place = fsspec.core.split_protocol(root)[0] == fsspec.core.split_protocol(store)[0]
        self._channels[name] = _Channel(name, schema, settings, root, options if same_place else {})
        self._full[name] = self.dropped.labels(name, "queue_full")

    def record(
        self, name: str, inputs: Inputs, n: int, outputs: Outputs, request_id: str, latency_s: float
    ) -> None:
        """On the request path: sample this request's rows and queue them; never blocks or raises
        for the sink."""
        channel = self._channels.get(name)
        if channel is None:
            return
        rate = channel.settings.rate
        if rate < 1:
            if n == 1:
                if random.random() >= rate:
                    return
            else:
                picked = np.flatnonzero(np.random.random(n) < rate)
                if not picked.size:
                    return
                inputs, outputs, n = (
                    _take_inputs(inputs, picked),
                    _take_outputs(outputs, picked),
                    int(picked.size),
                )
        settings = channel.settings
        size = _nbytes(inputs, n) + _nbytes(outputs.named or {"": outputs.value}, n)
        with channel.lock:
            queued, held = channel.queued + n, channel.queued_bytes + size
            full = queued > settings.max_rows or held > channel.max_bytes
            if not full:
                channel.items.append(_Item(inputs, outputs, n, size, request_id, latency_s, self._clock()))
                channel.queued, channel.queued_bytes = queued, held
        if full:
            self._full[name].inc(n)
        elif queued >= settings.flush_rows:
            self._wake.set()

    def start(self) -> None:
        if self._channels and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fnserve-capture", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Write what is queued (waiting at most ``timeout_s``), then end the thread."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        tick = min(c.settings.flush_s for c in self._channels.values())
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            closing = self._closing
            for channel in self._channels.values():
                if closing or self._due(channel):
                    try:
                        self._flush(channel)
                    except Exception:  # a bug of ours: this thread must outlive it, or the queue stays full
                        log.exception("%s: capture flush failed", channel.name)
            if closing:
                return

    def _due(self, channel: _Channel) -> bool:
        items = channel.items
        if not items:
            return False
        return (
            channel.queued >= channel.settings.flush_rows
            or self._clock() - items[0].at >= channel.settings.flush_s
        )

    def _flush(self, channel: _Channel) -> None:
        with channel.lock:
            items, channel.items = list(channel.items), collections.deque()
            channel.queued = channel.queued_bytes = 0
        groups: dict[tuple[int, str], list[_Item]] = {}
        for item in items:
            day = datetime.datetime.fromtimestamp(item.at, datetime.UTC).date().isoformat()
            groups.setdefault((item.outputs.version or 0, day), []).append(item)
        for (version, day), group in groups.items():
            rows = sum(item.n for item in group)
            try:
                self._write(channel, version, day, group)
            except Exception as exc:  # any backend's error: counted, logged once per outage
                self.dropped.labels(channel.name, "write_failed").inc(rows)
                if not channel.failing:
                    channel.failing = True
                    log.error(
                        "%s: capture to %s failed, dropping captured rows until it works again: %s: %s",
                        channel.name,
                        redact_text(channel.root),
                        type(exc).__name__,
                        redact_text(str(exc)),
                    )
                continue
            if channel.failing:
                channel.failing = False
                log.info("%s: capture to %s works again", channel.name, redact_text(channel.root))
            self.rows.labels(channel.name, str(version)).inc(rows)

    def _write(self, channel: _Channel, version: int, day: str, items: Sequence[_Item]) -> None:
        table = capture_table(channel.schema, items)
        if channel.fs is None:
            channel.fs, channel.path = fsspec.core.url_to_fs(channel.root, **channel.options)
        fs = channel.fs
        folder = f"{channel.path}/function={channel.name}/version={version}/date={day}"
        stamp = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC).strftime("%Y%m%dT%H%M%S")
        name = f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        fs.makedirs(folder, exist_ok=True)
        local = "file" in fs.protocol
        # Object stores show an object only once it is whole; a folder needs a hidden name, then a rename.
        target = f"{folder}/.{name}.tmp" if local else f"{folder}/{name}"
        with fs.open(target, "wb") as out:
            pq.write_table(table, out)
        if local:
            fs.mv(target, f"{folder}/{name}")


def capture_table(schema: Schema, items: Sequence[_Item]) -> pa.Table:
    """The queued requests as one table: inputs, outputs, then the request's id, latency and time."""
    parts = [
        to_columns(schema, item.inputs) if isinstance(item.inputs, Rows) else item.inputs for item in items
    ]
    columns: dict[str, pa.Array] = {}
    for field in schema.inputs:
        columns[field.name] = _arrow(concat_column([part[field.name] for part in parts]))
    outputs = [output_columns(item.outputs) for item in items]
    for key in outputs[0]:
        name = key if key not in columns and key not in META_COLUMNS else f"output_{key}"
        columns[name] = _arrow(concat_column([part[key] for part in outputs]))
    repeat = [item.n for item in items]
    columns["_request_id"] = pa.array(np.repeat([item.request_id for item in items], repeat), pa.string())
    columns["_latency_s"] = pa.array(np.repeat([item.latency_s for item in items], repeat), pa.float64())
    stamps = np.repeat([int(item.at * 1000) for item in items], repeat)
    columns["_time"] = pa.array(stamps, pa.timestamp("ms", tz="UTC"))
    return pa.table(columns)


def _arrow(column: Any) -> pa.Array:
    if isinstance(column, np.ndarray):
        return to_arrow(column)
    array = np.empty(len(column), dtype=object)
    array[:] = [v.tolist() if isinstance(v, np.ndarray) else v for v in column]
    return to_arrow(array)


def _take_inputs(inputs: Inputs, picked: np.ndarray) -> Inputs:
    if isinstance(inputs, Rows):
        return Rows([inputs[i] for i in picked])
    return {name: _take(column, picked) for name, column in inputs.items()}


def _take_outputs(outputs: Outputs, picked: np.ndarray) -> Outputs:
    if outputs.named is not None:
        named = {k: _take(v, picked) for k, v in outputs.named.items()}
        return Outputs(len(picked), None, named, outputs.version)
    return Outputs(len(picked), _take(outputs.value, picked), None, outputs.version)


def _nbytes(columns: Inputs | Mapping[str, Any], n: int) -> int:
    """Roughly the memory ``n`` rows hold: arrays' bytes, a guess for rows of Python values; cheap."""
    if isinstance(columns, Rows):
        return n * ROW_BYTES
    size = 0
    for column in columns.values():
        if isinstance(column, np.ndarray):
            size += column.nbytes
        elif column and isinstance(column[0], np.ndarray):  # free-size images: one array each
            size += sum(value.nbytes for value in column)
        else:
            size += n * ROW_BYTES
    return size


def _take(column: Any, picked: np.ndarray) -> Any:
    return column[picked] if isinstance(column, np.ndarray) else [column[i] for i in picked]

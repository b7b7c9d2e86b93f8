"""Prometheus metrics of one runtime process (own registry, so tests can build many apps).

The counters every prediction touches (requests, their latency, instances, table and cache
hits) are :class:`LoopCounter` and :class:`LoopHistogram`: plain numbers that only the event
loop's thread changes (every prediction route and the batcher's results run there), read by
prometheus_client through a collector when scraped. Its own ``Counter`` takes a lock for each
increment, five per request: timed in the server under load, this cut a lookup-table hit's
stages that count from 19.5 to 12.2 µs.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fnserve.runtime.versions import SkippedVersion

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class LoopCount:
    """One labelled counter's value (``inc`` from the event loop's thread only)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LoopCounter(Collector):
    """A labelled counter whose children are :class:`LoopCount` (exposed as ``<name>_total``)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry):
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.children: dict[tuple[str, ...], LoopCount] = {}
        registry.register(self)

    def labels(self, *values: str) -> LoopCount:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = LoopCount()
        return child

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):  # a copy: the loop may add one meanwhile
            family.add_metric(list(values), child.value, created=child.created)
        yield family


class LoopObservations:
    """One labelled histogram's counts: per bucket (not cumulative) and their sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1  # bucket i: amount <= bounds[i]
        self.sum += amount


class LoopHistogram(Collector):
    """A labelled histogram whose children are :class:`LoopObservations`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ):
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.children: dict[tuple[str, ...], LoopObservations] = {}
        registry.register(self)

    def labels(self, *values: str) -> LoopObservations:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = LoopObservations(self.bounds)
        return child

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [*(floatToGoString(b) for b in self.bounds), "+Inf"]
        for values, child in list(self.children.items()):
            counts, total = list(child.counts), child.sum
            running, buckets = 0, []
            for edge, count in zip(edges, counts, strict=True):
                running += count
                buckets.append((edge, running))
            family.add_metric(list(values), buckets, total)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = LoopCounter(
            "fnserve_requests", "Prediction requests by function and HTTP status", ["function", "status"], r
        )
        self.latency = LoopHistogram(
            "fnserve_request_seconds", "Prediction request latency", ["function"], LATENCY_BUCKETS_S, r
        )
        self.instances = LoopCounter(
            "fnserve_instances",
            "Instances predicted, by the checkpoint version whose model computed them (0: none)",
            ["function", "version"],
            r,
        )
        self.batch_size = Histogram(
            "fnserve_batch_size", "Instances per model call", ["function"], buckets=BATCH_BUCKETS, registry=r
        )
        self.lone_calls = Counter(
            "fnserve_lone_calls",
            "Lone requests whose short model call ran on the event loop's own turn (no thread hand-off)",
            ["function"],
            registry=r,
        )
        self.start_seconds = Gauge(
            "fnserve_start_seconds",
            "This process's start, in parts: import (interpreter, runtime, function file), fetch, "
            "framework, load, warm_up, ready (process start to ready; for a standby, activation to ready)",
            ["part"],
            registry=r,
        )
        self.queued = Gauge(
            "fnserve_queued_instances", "Instances waiting for a model call", ["function"], registry=r
        )
        self.in_flight = Gauge("fnserve_in_flight_requests", "HTTP requests being served", registry=r)
        self.version = Gauge(
            "fnserve_model_version", "Checkpoint version in memory", ["function"], registry=r
        )
        self.load_seconds = Gauge(
            "fnserve_model_load_seconds",
            "Time the last model load took (fetch + load)",
            ["function"],
            registry=r,
        )
        self.load_failures = Counter(
            "fnserve_checkpoint_load_failures",
            "Checkpoint versions passed over, by why: corrupt, loader (both skipped until a newer "
            "version is published) or unpublished (manifest not fully written; retried)",
            ["function", "version", "reason"],
            registry=r,
        )
        self._instance_children: dict[tuple[str, int | None], LoopCount] = {}
        self._request_children: dict[tuple[str, int], tuple[LoopCount, LoopObservations]] = {}
        # Answers given without the model: a version's lookup table, and the result cache.
        self.table_hits = LoopCounter(
            "fnserve_table_hits",
            "Instances answered from the lookup table of the version in memory",
            ["function", "version"],
            r,
        )
        self.table_misses = LoopCounter(
            "fnserve_table_misses",
            "Instances the version's lookup table does not hold (the model answered, or 404 if strict)",
            ["function", "version"],
            r,
        )
        self.cache_hits = LoopCounter(
            "fnserve_cache_hits",
            "Instances answered from the result cache",
            ["function", "version"],
            r,
        )
        self.cache_misses = LoopCounter(
            "fnserve_cache_misses",
            "Instances looked up in the result cache and not found",
            ["function", "version"],
            r,
        )
        self.cache_bytes = Gauge(
            "fnserve_cache_bytes",
            "Bytes held by the result cache (keys and answers)",
            ["function"],
            registry=r,
        )
        self.ready = Gauge(
            "fnserve_function_ready", "1 when the function's model is loaded", ["function"], registry=r
        )

    def observe_request(self, function: str, status: int, seconds: float) -> None:
        """Count and time one prediction request (children looked up once, not per request)."""
        key = (function, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(function, str(status)),
                self.latency.labels(function),
            )
        children[0].inc()
        children[1].observe(seconds)

    def count_instances(self, function: str, version: int | None, n: int) -> None:
        """Count ``n`` answered instances under the version whose model computed them."""
        key = (function, version)
        child = self._instance_children.get(key)
        if child is None:
            child = self._instance_children[key] = self.instances.labels(function, str(version or 0))
        child.inc(n)

    def count_skip(self, function: str, skipped: SkippedVersion) -> None:
        """Count a checkpoint version passed over (once per version and reason)."""
        self.load_failures.labels(function, str(skipped.version), skipped.reason).inc()

"""Prometheus metrics of one runtime process (own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fnserve.runtime.versions import SkippedVersion

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fnserve_requests",
            "Prediction requests by function and HTTP status",
            ["function", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "fnserve_request_seconds",
            "Prediction request latency",
            ["function"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.instances = Counter(
            "fnserve_instances",
            "Instances predicted, by the checkpoint version whose model computed them (0: none)",
            ["function", "version"],
            registry=r,
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
        self._instance_children: dict[tuple[str, int | None], Counter] = {}
        self._request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        # Answers given without the model: a version's lookup table, and the result cache.
        self.table_hits = Counter(
            "fnserve_table_hits",
            "Instances answered from the lookup table of the version in memory",
            ["function", "version"],
            registry=r,
        )
        self.table_misses = Counter(
            "fnserve_table_misses",
            "Instances the version's lookup table does not hold (the model answered, or 404 if strict)",
            ["function", "version"],
            registry=r,
        )
        self.cache_hits = Counter(
            "fnserve_cache_hits",
            "Instances answered from the result cache",
            ["function", "version"],
            registry=r,
        )
        self.cache_misses = Counter(
            "fnserve_cache_misses",
            "Instances looked up in the result cache and not found",
            ["function", "version"],
            registry=r,
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

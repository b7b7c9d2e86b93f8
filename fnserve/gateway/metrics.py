"""The gateway's Prometheus metrics (its own registry) and the recent figures `fn status` shows.

Per request the proxy touches one counter child and one histogram child, both looked up in a
plain dict first, and appends one (time, seconds) pair to a bounded deque.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fnserve.runtime.metrics import LATENCY_BUCKETS_S

COLD_START_BUCKETS_S = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)
RECENT = 4096  # requests kept per function for the request rate and p99 of `fn status`


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "fnserve_gateway_requests",
            "Requests proxied, by function, version and status",
            ["function", "version", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "fnserve_gateway_request_seconds",
            "Latency through the gateway, held time included",
            ["function"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.retries = Counter(
            "fnserve_gateway_retries", "Requests sent again to another replica", ["function"], registry=r
        )
        self.cold_starts = Counter(
            "fnserve_gateway_cold_starts",
            "Versions woken from zero replicas",
            ["function", "version"],
            registry=r,
        )
        self.cold_start_seconds = Histogram(
            "fnserve_gateway_cold_start_seconds",
            "Cold start from zero, in parts: total (scale request to the first held request's answer), "
            "start (process, container or standby claimed), import, fetch, framework, load, warm_up, "
            "other, ready (until the gateway saw it), first_answer",
            ["function", "part"],
            buckets=COLD_START_BUCKETS_S,
            registry=r,
        )
        self.desired = Gauge(
            "fnserve_gateway_replicas_desired", "Replicas asked for", ["function", "version"], registry=r
        )
        self.ready = Gauge(
            "fnserve_gateway_replicas_ready", "Replicas ready to serve", ["function", "version"], registry=r
        )
        self.in_flight = Gauge(
            "fnserve_gateway_in_flight_requests",
            "Requests in flight, held ones included",
            ["function"],
            registry=r,
        )
        self.held = Gauge(
            "fnserve_gateway_held_requests",
            "Requests waiting for a replica to be ready",
            ["function"],
            registry=r,
        )
        self.rollout_stage = Gauge(
            "fnserve_rollout_stage",
            "The stage (1-based) of the function's rollout in progress; 0 when none",
            ["function"],
            registry=r,
        )
        self.rollout_decisions = Counter(
            "fnserve_rollout_decisions",
            "Rollout decisions: started, advanced, promoted, rolled back, paused, resumed",
            ["function", "decision"],
            registry=r,
        )
        self.rollout_gate = Gauge(
            "fnserve_rollout_gate_value",
            "The value of each gate of the stage in progress, as last judged (NaN: not measured yet)",
            ["function", "gate"],
            registry=r,
        )
        self.shadow = Counter(
            "fnserve_shadow_copies",
            "Requests copied to a rollout's candidate: paired (answered), failed, skipped (no ready replica)",
            ["function", "outcome"],
            registry=r,
        )
        self._children: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    def observe(self, function: str, version: str, status: int, seconds: float) -> None:
        key = (function, version, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(function, version, str(status))
        child.inc()
        hist = self._latency.get(function)
        if hist is None:
            hist = self._latency[function] = self.latency.labels(function)
        hist.observe(seconds)

    def forget(self, function: str) -> None:
        self._children = {k: v for k, v in self._children.items() if k[0] != function}
        self._latency.pop(function, None)


class Recent:
    """The last requests of one function: request rate and p99 over the last minute."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=RECENT)

    def add(self, now: float, seconds: float) -> None:
        self.samples.append((now, seconds))

    def summary(self, window_s: float = 60.0) -> dict[str, float | None]:
        now = time.monotonic()
        recent = sorted(s for t, s in self.samples if t > now - window_s)
        if not recent:
            return {"requests_per_s": 0.0, "p50_ms": None, "p99_ms": None}
        span = min(window_s, max(1.0, now - min(t for t, _ in self.samples if t > now - window_s)))
        pick = lambda q: round(recent[min(len(recent) - 1, int(q * len(recent)))] * 1000, 2)  # noqa: E731
        return {"requests_per_s": round(len(recent) / span, 2), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}

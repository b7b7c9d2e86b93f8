"""Recent figures per function and version for the dashboard: 10 s buckets over the last 5 minutes.

Per request: one dict lookup, a few integer adds and one ``bisect`` into fixed latency edges; per
batch: three adds. Memory is bounded by the number of function versions, whatever the traffic.
No lock: batches are counted from the model's worker thread, requests on the event loop, and a
rare lost increment costs a dashboard less than a lock on every request would.

    >>> stats = RecentStats()
    >>> stats.request("double", "3", 0.004, 200, now=1000.0)
    >>> stats.request("double", "3", 0.2, 500, now=1001.0)
    >>> stats.batch("double", "3", 8, now=1001.0)
    >>> minute = stats.snapshot(now=1005.0)["double"]["3"]["last_minute"]
    >>> minute["requests"], minute["errors"], minute["batches"], minute["mean_batch"]
    (2, 1, 1, 8.0)
    >>> minute["p50_ms"] <= 5.0 < 200.0 <= minute["p99_ms"]
    True
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

BUCKET_S = 10
BUCKETS = 30  # five minutes
MINUTE_BUCKETS = 6
# Latency edges from 0.1 ms to ~2 min, 25% apart: a quantile read from them is within 25%.
LATENCY_EDGES_S = tuple(0.0001 * 1.25**i for i in range(64))


class Bucket:
    __slots__ = ("batches", "epoch", "errors", "instances", "latency", "max_batch", "rejected", "requests")

    def __init__(self) -> None:
        self.epoch = -1
        self.latency = [0] * (len(LATENCY_EDGES_S) + 1)
        self.clear(-1)

    def clear(self, epoch: int) -> None:
        self.epoch = epoch
        self.requests = self.errors = self.rejected = 0  # errors: 5xx; rejected: 4xx
        self.batches = self.instances = self.max_batch = 0
        for i in range(len(self.latency)):
            self.latency[i] = 0


class Series:
    """One function version's ring of buckets; a bucket older than the ring is reused, cleared."""

    __slots__ = ("ring", "since")

    def __init__(self, now: float | None = None) -> None:
        self.ring = [Bucket() for _ in range(BUCKETS)]
        self.since = time.time() if now is None else now  # no rate counts time before this

    def _seconds(self, start: float, end: float, now: float) -> float:
        """How long [start, end) was really counted: not before ``since``, not after ``now``."""
        return max(1.0, min(end, now) - max(start, self.since))

    def at(self, now: float) -> Bucket:
        epoch = int(now // BUCKET_S)
        bucket = self.ring[epoch % BUCKETS]
        if bucket.epoch != epoch:
            bucket.clear(epoch)
        return bucket

    def points(self, now: float) -> list[dict[str, Any]]:
        """Oldest first, one per bucket of the last five minutes (empty buckets as zeros)."""
        last = int(now // BUCKET_S)
        found = {b.epoch: b for b in self.ring}
        return [
            summary(
                [found[e]] if e in found else [],
                e * BUCKET_S,
                self._seconds(e * BUCKET_S, (e + 1) * BUCKET_S, now),
            )
            for e in range(last - BUCKETS + 1, last + 1)
        ]

    def last_minute(self, now: float) -> dict[str, Any]:
        last = int(now // BUCKET_S)
        recent = [b for b in self.ring if last - MINUTE_BUCKETS < b.epoch <= last]
        # The current bucket is partly filled, and a new series has no past: the rate is over the
        # time the window really spans.
        start = (last - MINUTE_BUCKETS + 1) * BUCKET_S
        return summary(recent, start, self._seconds(start, (last + 1) * BUCKET_S, now))


def summary(buckets: list[Bucket], start: float, seconds: float) -> dict[str, Any]:
    requests = sum(b.requests for b in buckets)
    errors = sum(b.errors for b in buckets)
    batches = sum(b.batches for b in buckets)
    instances = sum(b.instances for b in buckets)
    latency = [sum(column) for column in zip(*(b.latency for b in buckets), strict=True)] if buckets else []
    return {
        "t": start,
        "requests": requests,
        "errors": errors,
        "rejected": sum(b.rejected for b in buckets),
        "requests_per_s": round(requests / seconds, 3),
        "error_rate": round(errors / requests, 4) if requests else 0.0,
        "p50_ms": quantile_ms(latency, 0.5),
        "p99_ms": quantile_ms(latency, 0.99),
        "batches": batches,
        "instances": instances,
        "mean_batch": round(instances / batches, 2) if batches else None,
        "max_batch": max((b.max_batch for b in buckets), default=0),
    }


def quantile_ms(counts: list[int], q: float) -> float | None:
    """The upper edge of the bucket holding the ``q`` quantile, in ms (None: no requests)."""
    total = sum(counts)
    if not total:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(counts):
        seen += count
        if seen >= rank and count:
            edge = LATENCY_EDGES_S[min(i, len(LATENCY_EDGES_S) - 1)]
            return round(edge * 1000, 3)
    return None  # pragma: no cover - the loop always reaches the rank


class RecentStats:
    """Every function version's :class:`Series`, keyed by function name and version label."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Series] = {}

    def _of(self, function: str, version: str, now: float) -> Series:
        key = (function, version)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series(now)
        return series

    def request(
        self, function: str, version: str, seconds: float, status: int, now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        bucket = self._of(function, version, now).at(now)
        bucket.requests += 1
        if status >= 500:
            bucket.errors += 1
        elif status >= 400:
            bucket.rejected += 1
        bucket.latency[bisect_left(LATENCY_EDGES_S, seconds)] += 1

    def batch(self, function: str, version: str, n: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        bucket = self._of(function, version, now).at(now)
        bucket.batches += 1
        bucket.instances += n
        if n > bucket.max_batch:
            bucket.max_batch = n

    def figures(self, function: str, version: str, now: float) -> dict[str, Any]:
        """One version's ``{"points": [...], "last_minute": {...}}`` (zeros if it has none yet)."""
        series = self.series.get((function, version)) or Series(now)
        return {"points": series.points(now), "last_minute": series.last_minute(now)}

    def versions(self, function: str) -> set[str]:
        return {v for f, v in self.series if f == function}

    def forget(self, function: str) -> None:
        self.series = {k: v for k, v in self.series.items() if k[0] != function}

    def snapshot(self, now: float | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """``{function: {version: {"points": [...], "last_minute": {...}}}}``."""
        now = time.time() if now is None else now
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for function, version in sorted(self.series):
            out.setdefault(function, {})[version] = self.figures(function, version, now)
        return out


def version_label(version: int | None) -> str:
    """How a checkpoint version is labelled in the figures ("-": a function without one)."""
    return "-" if version is None else str(version)


def by_version(label: str) -> tuple[int, str]:
    """Sort key: numeric versions in numeric order, others after them."""
    return (int(label), "") if label.isdigit() else (1 << 62, label)

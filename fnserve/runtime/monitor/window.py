"""A sliding window of counts, by time and by count, in bounded memory.

The window is a ring of buckets, each one flat array of counts (every feature's bins side by
side) and the instances it saw. A batch adds its counts to the newest bucket; a new bucket opens
when the newest is ``seconds / buckets`` old or holds ``count / buckets`` instances. Buckets older
than ``seconds`` are dropped, and so are the oldest while the rest still hold ``count`` instances:
the window is the last ``seconds`` and the last ``count`` instances, to a bucket's precision, and
never holds more than ``buckets + 1`` arrays, whatever the traffic.

>>> w = Window(width=2, seconds=10, count=4, buckets=2)
>>> for t in (0, 1, 2):
...     w.add(np.array([1, 0]), 1, now=t)
>>> w.totals(now=3)
(3, [3, 0])
>>> w.totals(now=20)
(0, [0, 0])
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np


class _Bucket:
    __slots__ = ("counts", "samples", "started")

    def __init__(self, width: int, started: float):
        self.counts = np.zeros(width, dtype=np.int64)
        self.samples = 0
        self.started = started


class Window:
    def __init__(self, width: int, *, seconds: float, count: int, buckets: int = 10):
        self.width = width
        self.seconds = seconds
        self.count = count
        self._span_s = seconds / buckets
        self._cap = max(1, count // buckets)
        self._ring: collections.deque[_Bucket] = collections.deque()
        self._lock = threading.Lock()  # batches of several model threads add at once

    def add(self, counts: np.ndarray, samples: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            newest = self._ring[-1] if self._ring else None
            if newest is None or now - newest.started >= self._span_s or newest.samples >= self._cap:
                newest = _Bucket(self.width, now)
                self._ring.append(newest)
            newest.counts += counts
            newest.samples += samples
            self._trim(now)

    def totals(self, now: float | None = None) -> tuple[int, list[int]]:
        """Instances in the window and the sum of their counts."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            total = np.zeros(self.width, dtype=np.int64)
            for bucket in self._ring:
                total += bucket.counts
            return sum(b.samples for b in self._ring), total.tolist()

    def _trim(self, now: float) -> None:
        ring = self._ring
        while ring and now - ring[0].started >= self.seconds:
            ring.popleft()
        held = sum(b.samples for b in ring)
        while len(ring) > 1 and held - ring[0].samples >= self.count:
            held -= ring.popleft().samples

"""One step's measurements and what they add up to: throughput from the step's wall time, exact
percentiles from every recorded latency (no histogram buckets).

    >>> latencies = [0.001 * i for i in range(1, 101)]     # 1 ms ... 100 ms
    >>> result = StepResult(concurrency=4, batch=10, wall_s=2.0, latencies_s=latencies)
    >>> result.requests, result.requests_per_s, result.predictions_per_s
    (100, 50.0, 500.0)
    >>> round(result.p50_ms, 2), round(result.p99_ms, 2)
    (50.5, 99.01)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StepResult:
    """What one (concurrency, batch) step measured."""

    concurrency: int
    batch: int  # instances per request
    wall_s: float  # from the first request sent to the last answer received
    latencies_s: Sequence[float] = field(repr=False)  # one per successful request
    errors: int = 0  # failed requests: error statuses, refused or timed-out connections
    first_error: str | None = None  # the first failure's message, to show why
    _sorted: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sorted", np.sort(np.asarray(self.latencies_s, dtype=np.float64)))

    @property
    def requests(self) -> int:
        """Successful requests."""
        return len(self._sorted)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def predictions_per_s(self) -> float:
        return self.requests_per_s * self.batch

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile of the successful requests' latency (NaN when there are none)."""
        if not self.requests:
            return math.nan
        return float(np.percentile(self._sorted, q)) * 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile_ms(90)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

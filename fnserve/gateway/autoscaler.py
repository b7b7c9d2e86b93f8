"""How many replicas a version needs: Knative's KPA on in-flight requests, as a pure decision.

The gateway measures each version's concurrency (requests in flight, averaged over time, so
short requests count for what they weigh) and keeps a window of samples. Every tick:

* stable: desired = ceil(average over the stable window / target per replica);
* panic: when the panic window's average is at least twice what the ready replicas are meant to
  carry, scale up at once on the panic window, and do not scale down until a whole stable window
  has passed without that happening again;
* bounds: at least ``floor`` (``min_replicas``; 0 for a version with no traffic share), at most
  ``max_replicas``; down to zero only when the floor allows it and the version was idle (no
  request in flight or arriving) for ``scale_to_zero_after_s`` — then at once.

>>> s = Scaling(min_replicas=0, max_replicas=10, target_in_flight=4, stable_window_s=60, panic_window_s=6)
>>> decide(s, Load(stable=10, panic=10, idle_s=0), now=0, current=2, ready=2, floor=0).desired
3
>>> decide(s, Load(stable=2, panic=30, idle_s=0), now=100, current=1, ready=1, floor=0)
Decision(desired=8, panic_until=160)
>>> decide(s, Load(stable=0, panic=0, idle_s=301), now=0, current=1, ready=1, floor=0).desired
0
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from fnserve.gateway.platform import Scaling

PANIC_FACTOR = 2.0  # Knative's default panic threshold: 200% of what the ready replicas should carry


@dataclass(frozen=True)
class Load:
    stable: float  # average concurrency over the stable window
    panic: float  # average concurrency over the panic window
    idle_s: float  # seconds since the last request (in flight counts as not idle)


@dataclass(frozen=True)
class Decision:
    desired: int
    panic_until: float | None  # in panic mode until then (pass it back in on the next tick)


def decide(
    scaling: Scaling,
    load: Load,
    *,
    now: float,
    current: int,
    ready: int,
    floor: int,
    panic_until: float | None = None,
) -> Decision:
    """The replica count for one version, from its load and the counts it has now."""
    if floor == 0 and load.idle_s >= scaling.scale_to_zero_after_s:
        return Decision(0, None)  # idle long enough: whatever the windows still remember
    target = scaling.target_in_flight
    want_stable = math.ceil(load.stable / target - 1e-9)
    want_panic = math.ceil(load.panic / target - 1e-9)
    if load.panic > 0 and load.panic >= PANIC_FACTOR * target * max(ready, 1):
        panic_until = now + scaling.stable_window_s
    elif panic_until is not None and now >= panic_until:
        panic_until = None
    panicking = panic_until is not None
    desired = max(want_panic, current, want_stable) if panicking else want_stable
    if current > 0 or load.panic > 0 or load.stable > 0:
        desired = max(desired, 1)  # keep one until the idle period has passed
    desired = max(floor, min(desired, scaling.max_replicas))
    return Decision(desired, panic_until)


class LoadMeter:
    """A version's concurrency over time: call ``started``/``finished`` per request (cheap),
    ``sample`` once per tick; ``load`` answers the windows' averages."""

    __slots__ = ("area", "in_flight", "last_request", "sampled_at", "samples", "since")

    def __init__(self, now: float):
        self.in_flight = 0
        self.area = 0.0  # in-flight requests x seconds since the last sample
        self.since = self.sampled_at = now
        self.last_request = now
        self.samples: deque[tuple[float, float]] = deque()  # (time, average concurrency)

    def started(self, now: float) -> None:
        self.area += self.in_flight * (now - self.since)
        self.since = now
        self.in_flight += 1
        self.last_request = now

    def finished(self, now: float) -> None:
        self.area += self.in_flight * (now - self.since)
        self.since = now
        self.in_flight -= 1
        self.last_request = now

    def sample(self, now: float, keep_s: float) -> None:
        """Close the period since the last sample: its average concurrency becomes one sample."""
        self.area += self.in_flight * (now - self.since)
        period_s, self.since, self.sampled_at = now - self.sampled_at, now, now
        self.samples.append((now, self.area / period_s if period_s > 0 else float(self.in_flight)))
        self.area = 0.0
        while self.samples and self.samples[0][0] < now - keep_s:
            self.samples.popleft()

    def load(self, now: float, stable_s: float, panic_s: float) -> Load:
        return Load(
            stable=self._average(now, stable_s),
            panic=self._average(now, panic_s),
            idle_s=0.0 if self.in_flight else now - self.last_request,
        )

    def _average(self, now: float, window_s: float) -> float:
        values = [v for t, v in self.samples if t > now - window_s]
        return sum(values) / len(values) if values else float(self.in_flight)

"""The autoscaler's decisions by value (Knative KPA: stable and panic windows, scale to zero)."""

from __future__ import annotations

import pytest

from fnserve.gateway.autoscaler import Decision, Load, LoadMeter, decide
from fnserve.gateway.platform import Scaling

S = Scaling(
    min_replicas=0,
    max_replicas=10,
    target_in_flight=4,
    stable_window_s=60,
    panic_window_s=6,
    scale_to_zero_after_s=300,
)


def at(stable: float, panic: float | None = None, idle_s: float = 0.0) -> Load:
    return Load(stable=stable, panic=stable if panic is None else panic, idle_s=idle_s)


@pytest.mark.parametrize(
    ("load", "current", "ready", "floor", "desired"),
    [
        (at(10), 2, 2, 0, 3),  # ceil(10 / 4)
        (at(4), 3, 3, 0, 1),  # load fell: down to what the stable window needs
        (at(0.5), 0, 0, 0, 1),  # any load wants a replica
        (at(0, idle_s=10), 1, 1, 0, 1),  # idle, but not for long enough: keep one warm
        (at(0, idle_s=300), 1, 1, 0, 0),  # idle for scale_to_zero_after: zero
        (at(0, idle_s=300), 1, 1, 2, 2),  # min_replicas is a floor
        (at(0), 0, 0, 0, 0),  # nothing asked, nothing running
        (at(400), 2, 2, 0, 10),  # max_replicas is a ceiling
    ],
)
def test_stable_decisions(load: Load, current: int, ready: int, floor: int, desired: int) -> None:
    assert decide(S, load, now=0, current=current, ready=ready, floor=floor).desired == desired


def test_a_burst_panics_scales_on_the_panic_window_and_holds_for_a_stable_window() -> None:
    burst = decide(S, at(2, panic=30), now=100, current=1, ready=1, floor=0)
    assert burst == Decision(desired=8, panic_until=160)
    # The burst is over, but within the stable window the count does not go down.
    calm = decide(S, at(2, panic=1), now=130, current=8, ready=8, floor=0, panic_until=160)
    assert calm == Decision(desired=8, panic_until=160)
    # A stable window later, back to the stable decision.
    after = decide(S, at(2, panic=1), now=161, current=8, ready=8, floor=0, panic_until=160)
    assert after == Decision(desired=1, panic_until=None)


def test_panic_is_measured_against_the_replicas_that_are_ready() -> None:
    # 30 in flight over 4 ready replicas (16 expected) is not twice the target: no panic.
    assert decide(S, at(8, panic=30), now=0, current=4, ready=4, floor=0).panic_until is None
    # The same load with 1 of the 4 ready is.
    assert decide(S, at(8, panic=30), now=0, current=4, ready=1, floor=0).panic_until == 60


def test_the_meter_averages_concurrency_over_time() -> None:
    meter = LoadMeter(now=0.0)
    meter.started(0.0)
    meter.started(0.5)
    meter.finished(1.0)  # 1 in flight for 0.5 s, 2 for 0.5 s
    meter.sample(1.0, keep_s=60)
    meter.finished(1.5)
    meter.sample(2.0, keep_s=60)  # 1 in flight for 0.5 s of 1 s
    assert meter.samples[0] == (1.0, 1.5) and meter.samples[1] == (2.0, 0.5)
    load = meter.load(2.0, stable_s=60, panic_s=0.5)
    assert load == Load(stable=1.0, panic=0.5, idle_s=0.5)


def test_the_meter_forgets_samples_older_than_the_stable_window() -> None:
    meter = LoadMeter(now=0.0)
    for t in range(1, 11):
        meter.sample(float(t), keep_s=3)
    assert [t for t, _ in meter.samples] == [7.0, 8.0, 9.0, 10.0]

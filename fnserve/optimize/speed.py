"""Latency at batch 1 and throughput at the largest batch, of several contenders side by side.

Each contender is a callable computing one batch (``run(columns, n)``). All of them are measured
in one run, pinned to one CPU core (every thread of the process: TensorFlow's pools included),
in alternating rounds — base, variant, then variant, base — so that a slow moment of the machine
(another process, a frequency change) costs each of them alike instead of skewing the ratio.

>>> plan = SpeedPlan(rounds=2, calls=3, warmup=1)
>>> speeds = measure({"a": lambda columns, n: None}, {"x": np.zeros(4)}, 4, plan)
>>> sorted(speeds["a"])
['max_batch_size', 'p50_batch1_ms', 'preds_per_s']
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Run = Callable[[dict[str, Any], int], Any]


@dataclass(frozen=True)
class SpeedPlan:
    rounds: int = 6  # alternating rounds; each contender runs `calls` calls of each kind per round
    calls: int = 40  # timed calls per contender, batch kind and round
    warmup: int = 5  # untimed calls per contender and batch kind before the first round


def measure(
    contenders: Mapping[str, Run], columns: Mapping[str, np.ndarray], max_batch: int, plan: SpeedPlan
) -> dict[str, dict[str, float]]:
    """Per contender: ``p50_batch1_ms`` (median latency of one-row calls), ``preds_per_s`` (rows a
    second in calls of ``max_batch`` rows, from the median call time) and ``max_batch_size``."""
    one = _rows(columns, 1)
    full = _rows(columns, max_batch)
    single: dict[str, list[float]] = {name: [] for name in contenders}
    batched: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    with pinned_to_one_core():
        for name in names:
            for _ in range(plan.warmup):
                contenders[name](one, 1)
                contenders[name](full, max_batch)
        for round_ in range(plan.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                run = contenders[name]
                single[name] += _timed(run, one, 1, plan.calls)
                batched[name] += _timed(run, full, max_batch, max(1, plan.calls // 4))
    return {
        name: {
            "p50_batch1_ms": round(float(np.median(single[name])) * 1000, 4),
            "preds_per_s": round(max_batch / float(np.median(batched[name])), 1),
            "max_batch_size": max_batch,
        }
        for name in names
    }


@contextlib.contextmanager
def pinned_to_one_core() -> Iterator[int | None]:
    """Every thread of this process on one of the cores it may use, then back; yields the core
    (None where the platform cannot pin: the numbers are then measured unpinned)."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    core = max(allowed)  # the last core: the first is where the system's interrupts usually land
    threads = _threads()
    before = {tid: _affinity(tid) for tid in threads}
    for tid in threads:
        _set_affinity(tid, {core})
    try:
        yield core
    finally:
        for tid, cores in before.items():
            if cores is not None:
                _set_affinity(tid, cores)
        for tid in set(_threads()) - set(before):  # threads started meanwhile inherited the one core
            _set_affinity(tid, allowed)


def _threads() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _affinity(tid: int) -> set[int] | None:
    try:
        return os.sched_getaffinity(tid)
    except OSError:  # the thread ended meanwhile
        return None


def _set_affinity(tid: int, cores: set[int]) -> None:
    with contextlib.suppress(OSError):  # the thread ended meanwhile
        os.sched_setaffinity(tid, cores)


def _timed(run: Run, columns: dict[str, Any], n: int, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        run(columns, n)
        times.append(time.perf_counter() - started)
    return times


def _rows(columns: Mapping[str, np.ndarray], n: int) -> dict[str, Any]:
    """The first ``n`` rows of ``columns``, repeated when there are fewer."""
    out = {}
    for name, column in columns.items():
        repeats = -(-n // max(1, len(column)))
        out[name] = (np.concatenate([column] * repeats) if repeats > 1 else column)[:n]
    return out

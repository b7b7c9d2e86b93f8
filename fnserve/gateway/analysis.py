"""What a rollout stage is judged by: each version's answers over the stage's window, the shadow
pairs (the candidate's answer beside stable's to the same request), and the gates.

The proxy feeds :class:`StageWindow` with every answered request (the version, its latency, whether
it failed) and the shadow copier with every pair; :func:`judge` turns the window into a decision.

>>> pairs = ShadowWindow()
>>> pairs.add(b'{"predictions":[0.2]}', b'{"predictions":[0.25]}', 0.001)
>>> pairs.add(b'{"predictions":[0.7]}', b'{"predictions":[0.4]}', 0.001)
>>> round(pairs.mean_abs_diff(), 3), pairs.label_flip_rate()
(0.175, 0.5)
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fnserve.gateway.rollout import GATES, RolloutPolicy, Stage
from fnserve.runtime.monitor.drift import psi

KEPT = 20_000  # latencies and output values a window keeps (the newest) for its quantiles
WARM_UP = 10  # with over twice as many, a window's first answers do not count for its p99 (warm-up)
PSI_BINS = 10  # stable's output deciles make the bins of the output PSI


class VersionWindow:
    """One version's answers since the stage began."""

    __slots__ = ("failed", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.failed = 0
        self.latencies: deque[float] = deque(maxlen=KEPT)

    def add(self, seconds: float, failed: bool) -> None:
        self.requests += 1
        self.failed += failed
        self.latencies.append(seconds)

    def error_rate(self) -> float | None:
        return self.failed / self.requests if self.requests else None

    def p99(self) -> float | None:
        return p99(self.latencies)


class ShadowWindow:
    """The candidate's answers to copied requests, each beside stable's answer to the same one."""

    def __init__(self) -> None:
        self.copies = 0  # copies answered or failed (what the stage counts)
        self.failed = 0  # the candidate failed where stable answered (5xx, refused, timeout)
        self.incomparable = 0  # both answered, but not in a form that pairs (Arrow, other shapes)
        self.skipped = 0  # not copied: the candidate had no ready replica, or too many copies in flight
        self.latencies: deque[float] = deque(maxlen=KEPT)
        self.stable_values: deque[float] = deque(maxlen=KEPT)
        self.candidate_values: deque[float] = deque(maxlen=KEPT)
        self.abs_diff_sum = 0.0
        self.values = 0
        self.probabilities = 0  # paired values both within [0, 1]
        self.flips = 0  # of those, on opposite sides of 0.5

    def fail(self, seconds: float) -> None:
        self.copies += 1
        self.failed += 1
        self.latencies.append(seconds)

    def add(self, stable_body: bytes, candidate_body: bytes, seconds: float) -> None:
        self.copies += 1
        self.latencies.append(seconds)
        stable, candidate = numbers(stable_body), numbers(candidate_body)
        if stable is None or candidate is None or len(stable) != len(candidate) or not stable:
            self.incomparable += 1
            return
        a, b = np.asarray(stable, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
        self.abs_diff_sum += float(np.abs(a - b).sum())
        self.values += len(a)
        probable = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        self.probabilities += int(probable.sum())
        self.flips += int(((a[probable] >= 0.5) != (b[probable] >= 0.5)).sum())
        self.stable_values.extend(a.tolist())
        self.candidate_values.extend(b.tolist())

    def mean_abs_diff(self) -> float | None:
        return self.abs_diff_sum / self.values if self.values else None

    def label_flip_rate(self) -> float | None:
        return self.flips / self.probabilities if self.probabilities else None

    def rank_agreement(self) -> float | None:
        """Spearman's rank correlation of the paired values (None under 3 pairs or no spread)."""
        if len(self.stable_values) < 3:
            return None
        a = _ranks(np.fromiter(self.stable_values, float))
        b = _ranks(np.fromiter(self.candidate_values, float))
        if a.std() == 0 or b.std() == 0:
            return None
        return float(np.corrcoef(a, b)[0, 1])

    def output_psi(self) -> float | None:
        """PSI of the candidate's values against stable's, over bins made from stable's deciles."""
        if len(self.stable_values) < PSI_BINS:
            return None
        stable = np.fromiter(self.stable_values, float)
        candidate = np.fromiter(self.candidate_values, float)
        edges = psi_edges(stable)
        shares = [
            np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1) / len(v)
            for v in (stable, candidate)
        ]
        return psi(shares[0], shares[1])

    def p99(self) -> float | None:
        return p99(self.latencies)

    def summary(self) -> dict[str, Any]:
        return {
            "copies": self.copies,
            "failed": self.failed,
            "incomparable": self.incomparable,
            "skipped": self.skipped,
            "mean_abs_diff": _round(self.mean_abs_diff()),
            "label_flip_rate": _round(self.label_flip_rate()),
            "rank_agreement": _round(self.rank_agreement()),
            "output_psi": _round(self.output_psi()),
        }


def psi_edges(stable: np.ndarray) -> np.ndarray:
    """Bin edges from stable's deciles that a rounding difference does not cross: halfway between
    consecutive distinct deciles, and a margin of 5% of the range (of the value, when all are one)
    outside the smallest and the largest, so that stable answering one value and a quantized
    candidate answering it a hair lower score the same, and a shift beyond the margin does not.

    >>> psi_edges(np.array([0.178] * 20)).round(4).tolist()
    [0.1691, 0.1869]
    """
    distinct = np.unique(np.quantile(stable, np.linspace(0, 1, PSI_BINS + 1)))
    low, high = float(distinct[0]), float(distinct[-1])
    margin = 0.05 * ((high - low) or abs(low) or 1e-9)
    return np.concatenate(([low - margin], (distinct[1:] + distinct[:-1]) / 2, [high + margin]))


def p99(latencies: deque[float]) -> float | None:
    """The 99th percentile, leaving out the first ``WARM_UP`` (a new replica's first calls trace
    and allocate) when there are more than twice as many."""
    if not latencies:
        return None
    values = np.fromiter(latencies, float)
    return float(np.quantile(values[WARM_UP:] if len(values) > 2 * WARM_UP else values, 0.99))


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def numbers(body: bytes) -> list[float] | None:
    """The numbers of a JSON answer in a fixed order — ``{"predictions": [...]}`` (fnserve's own
    and TF Serving's; objects by sorted key) or the Open Inference Protocol's ``{"outputs":
    [{"name", "data"}]}`` by output name — or None for any other body."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    found: list[float] = []
    if "predictions" in answer:
        return found if _flatten(answer["predictions"], found) else None
    outputs = answer.get("outputs")
    if isinstance(outputs, list) and all(isinstance(o, dict) for o in outputs):
        for output in sorted(outputs, key=lambda o: str(o.get("name"))):
            if not _flatten(output.get("data"), found):
                return None
        return found
    return None


def _flatten(value: Any, into: list[float]) -> bool:
    if isinstance(value, (int, float)):  # bool included: True is 1.0
        into.append(float(value))
    elif isinstance(value, list):
        return all(_flatten(v, into) for v in value)
    elif isinstance(value, dict):
        return all(_flatten(value[k], into) for k in sorted(value))
    else:
        return False  # text, null: not a number to compare
    return True


@dataclass
class StageWindow:
    """What one stage of one rollout has seen so far (in memory: a restart starts it again)."""

    candidate: str
    stable: str
    stage: int
    since: float = 0.0  # the rollout's stage_started this window belongs to (a resume starts anew)
    started: float = field(default_factory=time.monotonic)
    candidate_answers: VersionWindow = field(default_factory=VersionWindow)
    stable_answers: VersionWindow = field(default_factory=VersionWindow)
    shadow: ShadowWindow = field(default_factory=ShadowWindow)
    ready_seen: bool = False  # the candidate had a ready replica during this window

    def observe(self, label: str, seconds: float, failed: bool) -> None:
        if label == self.candidate:
            self.candidate_answers.add(seconds, failed)
        elif label == self.stable:
            self.stable_answers.add(seconds, failed)

    def observations(self, stage: Stage) -> int:
        return self.shadow.copies if stage.shadow else self.candidate_answers.requests

    def summary(self, stage: Stage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds": round(time.monotonic() - self.started, 1),
            "observations": self.observations(stage),
            "candidate": _version_summary(self.candidate_answers),
            "stable": _version_summary(self.stable_answers),
        }
        if stage.shadow:
            out["shadow"] = self.shadow.summary()
        return out


def _version_summary(window: VersionWindow) -> dict[str, Any]:
    p99 = window.p99()
    return {
        "requests": window.requests,
        "error_rate": _round(window.error_rate()),
        "p99_ms": None if p99 is None else round(p99 * 1000, 3),
    }


@dataclass(frozen=True)
class Verdict:
    decision: str  # "wait", "pass" or "fail"
    evidence: str  # the gates and their numbers, as a sentence
    measured: Mapping[str, float | None]


def measure(
    window: StageWindow, stage: Stage, input_drift: float | None, names: Iterable[str]
) -> dict[str, float | None]:
    """The value now of each gate in ``names`` that this kind of stage measures (None: not
    measurable yet); only those are computed: the control loop judges every tick."""
    shadow = window.shadow
    answers = window.candidate_answers

    def error_rate() -> float | None:
        rate = (
            (shadow.failed / shadow.copies if shadow.copies else None)
            if stage.shadow
            else answers.error_rate()
        )
        return None if rate is None else rate - (window.stable_answers.error_rate() or 0.0)

    def p99_latency_ratio() -> float | None:
        p99, stable = (shadow.p99() if stage.shadow else answers.p99()), window.stable_answers.p99()
        return p99 / stable if p99 is not None and stable else None

    values: dict[str, Callable[[], float | None]] = {
        "error_rate": error_rate,
        "p99_latency_ratio": p99_latency_ratio,
        "input_drift": lambda: input_drift,
    }
    if stage.shadow:
        values |= {
            "mean_abs_diff": shadow.mean_abs_diff,
            "label_flip_rate": shadow.label_flip_rate,
            "rank_agreement": shadow.rank_agreement,
            "output_psi": shadow.output_psi,
        }
    return {name: values[name]() for name in names if name in values}


def judge(
    policy: RolloutPolicy, stage: Stage, window: StageWindow, input_drift: float | None = None
) -> Verdict:
    """Fail at once when a gate is broken on at least ``min_requests`` observations; pass when
    the stage's ``requests`` and ``min_seconds`` are reached with every gate kept; else wait.
    A gate that still cannot be measured when the stage is complete fails it (nothing is
    promoted on evidence that was never seen)."""
    seen = window.observations(stage)
    measured = measure(window, stage, input_drift, policy.gates)
    kept: list[str] = []
    broken: list[str] = []
    unmeasured: list[str] = []
    for name, limit in policy.gates.items():
        gate = GATES[name]
        if gate.stages == "shadow" and not stage.shadow:
            continue
        value = measured.get(name)
        if value is None:
            unmeasured.append(name)
            continue
        ok = value <= limit if gate.bound == "max" else value >= limit
        (kept if ok else broken).append(
            f"{name} {value:.4g} ({'≤' if gate.bound == 'max' else '≥'} {limit:g})"
        )
    counts = f"{seen} {'paired answers' if stage.shadow else 'candidate answers'}"
    if broken and seen >= min(policy.min_requests, stage.requests):
        return Verdict("fail", f"{', '.join(broken)} over {counts}", measured)
    complete = seen >= stage.requests and time.monotonic() - window.started >= stage.min_seconds
    if not complete:
        return Verdict("wait", f"{counts} of {stage.requests}", measured)
    if broken:
        return Verdict("fail", f"{', '.join(broken)} over {counts}", measured)
    if unmeasured:
        why = _unmeasurable(window, stage)
        return Verdict("fail", f"{', '.join(unmeasured)} could not be measured over {counts}{why}", measured)
    return Verdict("pass", f"{', '.join(kept) or 'no gates'} over {counts}", measured)


def _unmeasurable(window: StageWindow, stage: Stage) -> str:
    if stage.shadow and window.shadow.copies and window.shadow.incomparable == window.shadow.copies:
        return " (no answer was JSON with numeric predictions)"
    if not window.stable_answers.requests:
        return " (stable answered nothing meanwhile)"
    return ""


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)

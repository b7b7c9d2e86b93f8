"""Which version answers a request: weighted choice, sticky by a request key, pins bypass it.

A split is a table of cumulative weights over 0..99. An unkeyed request draws a uniform
point; a keyed one hashes ``function + key`` to a point, so one caller always lands on the
same version while the weights stay put, and moving weight from A to B moves only the callers
whose point lies in the moved band (no reshuffle of everyone).

>>> split = Split({"3": 90, "4": 10})
>>> split.choose(point=0), split.choose(point=89), split.choose(point=90)
('3', '3', '4')
>>> parse_weights(["v3=90", "v4=10"])
{'v3': 90, 'v4': 10}
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable, Mapping

from fnserve.runtime.errors import FnError

TOTAL = 100


class SplitError(FnError, ValueError):
    """Weights that cannot make a split; the message says why."""

    status = 422


class Split:
    """Versions with their cumulative weight bounds; versions at weight 0 are never chosen."""

    __slots__ = ("bounds", "labels", "only")

    def __init__(self, weights: Mapping[str, int]):
        check_weights(weights)
        self.labels: list[str] = []
        self.bounds: list[int] = []
        total = 0
        for label, weight in weights.items():
            if weight > 0:
                total += weight
                self.labels.append(label)
                self.bounds.append(total)
        self.only = self.labels[0] if len(self.labels) == 1 else None  # the common case: no draw

    def choose(self, key: str | None = None, *, salt: str = "", point: int | None = None) -> str:
        """The version for one request: by ``key`` (sticky), else at random (or at ``point``)."""
        if self.only is not None:
            return self.only
        if point is None:
            point = sticky_point(salt, key) if key else random.randrange(TOTAL)
        return self.labels[bisect.bisect_right(self.bounds, point)]


def sticky_point(salt: str, key: str) -> int:
    """A stable point in 0..99 for a caller: the same key always maps to the same point."""
    digest = hashlib.blake2b(f"{salt}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % TOTAL


def check_weights(weights: Mapping[str, int]) -> None:
    for label, weight in weights.items():
        if type(weight) is not int or not 0 <= weight <= TOTAL:
            raise SplitError(f"weight of {label!r} must be an integer 0-{TOTAL}, got {weight!r}")
    if sum(weights.values()) != TOTAL:
        shown = ", ".join(f"{k}={v}" for k, v in weights.items())
        raise SplitError(f"weights must add up to {TOTAL}, got {sum(weights.values())} ({shown})")


def parse_weights(items: Iterable[str]) -> dict[str, int]:
    """``["v3=90", "v4=10"]`` (the CLI's form) to ``{"v3": 90, "v4": 10}``, checked."""
    weights: dict[str, int] = {}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep or not label or not value.strip().isdigit():
            raise SplitError(f"{item!r}: expected VERSION=WEIGHT, e.g. v3=90")
        if label in weights:
            raise SplitError(f"version {label!r} is named twice")
        weights[label] = int(value)
    check_weights(weights)
    return weights


def rebalance(weights: Mapping[str, int], label: str, weight: int) -> dict[str, int]:
    """Give ``label`` exactly ``weight`` and scale the others to share the rest, keeping their
    proportions (largest remainder, so the result adds up to 100 exactly).

    >>> rebalance({"1": 100}, "2", 10)
    {'1': 90, '2': 10}
    >>> rebalance({"1": 50, "2": 50}, "3", 10)
    {'1': 45, '2': 45, '3': 10}
    """
    if not 0 <= weight <= TOTAL:
        raise SplitError(f"weight must be 0-{TOTAL}, got {weight}")
    others = {k: v for k, v in weights.items() if k != label}
    rest, base = TOTAL - weight, sum(others.values())
    if not others:
        return {label: TOTAL}
    if base == 0:  # nothing to keep proportional: the first other version takes the rest
        shares = {k: (rest if i == 0 else 0) for i, k in enumerate(others)}
        return {**shares, label: weight}
    exact = {k: v * rest / base for k, v in others.items()}
    shares = {k: int(x) for k, x in exact.items()}
    leftover = rest - sum(shares.values())
    for k in sorted(exact, key=lambda k: exact[k] - shares[k], reverse=True)[:leftover]:
        shares[k] += 1
    return {**shares, label: weight}

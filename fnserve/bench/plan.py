"""What a benchmark run does, as data: the function, the load levels, how long each step lasts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from fnserve.client.core import DEFAULT_URL
from fnserve.runtime.errors import FnError


class BenchError(FnError):
    """The benchmark cannot run as asked: unknown function, inputs the function refuses, bad options."""

    status = 400


class Step(NamedTuple):
    """One point of the sweep: this many requests in flight, each carrying ``batch`` instances."""

    concurrency: int
    batch: int


@dataclass(frozen=True)
class BenchPlan:
    """A load sweep over every (batch, concurrency) pair; each step stops by itself.

    >>> plan = BenchPlan("double", concurrency=(1, 8), batch=(1, 32), duration_s=1.0)
    >>> [tuple(step) for step in plan.steps()]      # (concurrency, batch)
    [(1, 1), (8, 1), (1, 32), (8, 32)]
    """

    function: str  # the name, or name@version to pin one
    url: str = DEFAULT_URL
    concurrency: tuple[int, ...] = (1, 4, 16, 64)  # requests in flight, one step per level
    batch: tuple[int, ...] = (1, 32)  # instances per request, one step per size
    duration_s: float = 2.0  # each step runs at most this long ...
    requests: int | None = None  # ... and stops after this many requests, if given
    warmup_s: float = 0.2  # unmeasured load before each step (connections, caches, batch window)
    timeout_s: float = 30.0  # one request's deadline, so that a step always ends
    arrow: bool = False  # send Arrow IPC streams instead of JSON

    def __post_init__(self) -> None:
        for name, levels in (("concurrency", self.concurrency), ("batch", self.batch)):
            if not levels or any(level < 1 for level in levels):
                raise BenchError(f"{name}: expected positive whole numbers, got {levels}")
        if not 0 < self.duration_s <= 3600:
            raise BenchError(f"duration: expected 0 < seconds <= 3600, got {self.duration_s:g}")
        if self.requests is not None and self.requests < 1:
            raise BenchError(f"requests: expected at least 1, got {self.requests}")
        if self.warmup_s < 0 or self.timeout_s <= 0:
            raise BenchError("warmup_s must be >= 0 and timeout_s > 0")

    def steps(self) -> list[Step]:
        """Batch sizes outermost, so each plotted line (one batch size) is measured in one go."""
        return [Step(c, b) for b in self.batch for c in self.concurrency]


def parse_levels(text: str, option: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``; a BenchError naming ``option`` otherwise.

    >>> parse_levels("1, 4,16", "--concurrency")
    (1, 4, 16)
    """
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BenchError(
            f"{option}: expected comma-separated whole numbers like 1,4,16, got {text!r}"
        ) from None
    if not levels or min(levels) < 1:
        raise BenchError(f"{option}: expected positive whole numbers like 1,4,16, got {text!r}")
    return levels

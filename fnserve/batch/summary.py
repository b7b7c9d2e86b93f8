"""What a batch job has done: its progress while it runs, and its summary once it stops.

>>> Summary("out", "out/_errors", 10, 9, 1, 1, 0, 10, 2.0, 0.5, {"3": 9}, True, [(4, "x: bad")]).rows_per_s
5.0
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from fnserve.batch.scoring import Scored

EXAMPLES = 5  # bad rows quoted in the summary


@dataclass(frozen=True)
class Progress:
    rows: int  # input rows done: scored or set apart as bad, parts done by earlier runs included
    total_rows: int | None  # None: not known before reading (CSV, JSON lines, an Arrow stream)
    bytes_read: int  # how far into the input reading got, for progress when total_rows is None
    total_bytes: int
    errors: int  # bad rows so far, earlier runs' included
    parts: int  # parts done, earlier runs' included
    resumed_rows: int  # of ``rows``, those done by earlier runs


@dataclass(frozen=True)
class Summary:
    output: str  # the output folder (credentials masked)
    errors_at: str  # where bad rows are
    rows: int  # input rows of the parts done (the whole input, once complete)
    scored: int
    errors: int
    parts: int  # parts done
    resumed_parts: int  # of those, done by earlier runs
    run_rows: int  # rows this run did
    seconds: float  # this run's scoring, from the model loaded (or the server reached) to the last part
    load_s: float  # loading the model (0 against a server)
    versions: dict[str, int]  # rows scored by each version ("none": no checkpoint)
    complete: bool  # every part done and joined in _fnbatch/manifest.json
    examples: list[tuple[int | None, str]]  # this run's first bad rows: (row, reason)

    @property
    def rows_per_s(self) -> float:
        return self.run_rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Tally:
    """What a run has done so far, and what was done before it."""

    rows_before: int
    errors_before: int
    parts_before: int
    rows: int = 0
    errors: int = 0
    parts: int = 0
    examples: list[tuple[int | None, str]] = field(default_factory=list)

    def add(self, rows: int, scored: Scored) -> None:
        self.rows += rows
        if scored.bad is not None and scored.bad.num_rows:
            self.errors += scored.bad.num_rows
            room = EXAMPLES - len(self.examples)
            if room > 0:
                picked = scored.bad.slice(0, room)
                rows_, errors = picked.column("row").to_pylist(), picked.column("error").to_pylist()
                self.examples += list(zip(rows_, errors, strict=True))


def versions_of(markers: Any) -> dict[str, int]:
    total: collections.Counter[str] = collections.Counter()
    for marker in markers:
        total.update(marker["versions"])
    return dict(sorted(total.items()))

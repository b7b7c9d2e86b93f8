"""Why a checkpoint version did not load, and whether trying it again could help.

A function following ``latest`` serves the newest version that verifies and loads. A failed
version is sorted by :func:`skip_reason`:

* ``corrupt`` (a file differs from the manifest or is missing, the manifest is malformed) and
  ``loader`` (the function's loader raised): skipped until a newer version is published;
* ``unpublished`` (the manifest is empty or cut short: still being written): skipped for now,
  tried again on the next reload;
* anything else — the store unreachable, the local cache not writable — is no fault of the
  version: :func:`with_retries` retries it with backoff, and then the whole load is retried later.

>>> from fnserve.runtime.errors import CheckpointCorrupt, StorageUnavailable
>>> skip_reason(CheckpointCorrupt("recs/2/w.bin is corrupt")), skip_reason(StorageUnavailable("down"))
('corrupt', None)
>>> SkippedVersion(2, "loader", "ValueError: could not convert\\nTraceback ...").describe()
{'version': 2, 'reason': 'loader', 'error': 'ValueError: could not convert'}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fnserve.runtime.errors import (
    CheckpointCorrupt,
    CheckpointIncomplete,
    CheckpointNotFound,
    FnError,
    FunctionError,
)

log = logging.getLogger("fnserve.function")
T = TypeVar("T")

# A blip in the store is retried within one load: ATTEMPTS tries, pausing FIRST_PAUSE_S, then twice that.
ATTEMPTS = 3
FIRST_PAUSE_S = 0.25
_FOR_GOOD = frozenset({"corrupt", "loader"})


@dataclass(frozen=True)
class SkippedVersion:
    """A version that was tried and passed over; ``error`` is redacted, as status may show it."""

    version: int
    reason: str  # "corrupt" or "loader": until a newer version is published; "unpublished": for now
    error: str

    @property
    def for_good(self) -> bool:
        """Whether the version stays skipped (until a newer one is published) rather than retried."""
        return self.reason in _FOR_GOOD

    def describe(self) -> dict[str, Any]:
        first_line = self.error.strip().splitlines()[0] if self.error.strip() else ""
        return {"version": self.version, "reason": self.reason, "error": first_line}


def skip_reason(exc: BaseException) -> str | None:
    """Why a version that raised ``exc`` while loading is skipped; None: not its fault, retry it."""
    if isinstance(exc, CheckpointIncomplete | CheckpointNotFound):
        return "unpublished"  # being written, or gone between listing and reading
    if isinstance(exc, CheckpointCorrupt):
        return "corrupt"
    if isinstance(exc, FunctionError):
        return "loader"
    return None


def with_retries(call: Callable[[], T], what: str) -> T:
    """``call()``, tried up to :data:`ATTEMPTS` times with a doubling pause while it fails with an
    error that is no version's fault (:func:`skip_reason` is None); the last such error is raised."""
    pause_s = FIRST_PAUSE_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except FnError as exc:
            if attempt == ATTEMPTS or skip_reason(exc) is not None:
                raise
            log.warning("%s failed (attempt %d of %d), retrying: %s", what, attempt, ATTEMPTS, exc.message)
        time.sleep(pause_s)
        pause_s *= 2
    raise AssertionError("unreachable")  # the last attempt returned or raised

"""What the docker platform remembers between calls: which containers drain and since when, which
were ever ready, which crashed, and each version's failures and pause before its next start.

Pure bookkeeping with the time passed in, so the rules are tested without containers. A container
chosen to go is *draining* at once (the gateway stops routing to it), gets SIGTERM ``stop_delay_s``
later (the runtime finishes what it holds, then exits) and SIGKILL past ``kill_after_s``:

>>> t = Tracker(stop_delay_s=1, kill_after_s=10)
>>> t.drain("c1", now=0)
>>> t.signal("c1", now=0.5), t.signal("c1", now=1.0), t.signal("c1", now=5), t.signal("c1", now=12)
(None, 'SIGTERM', None, 'SIGKILL')

A version whose containers crash before they were ever ready waits longer before each new start:

>>> key = ("recs", "1")
>>> t.crashed(key, "c2", now=0), t.may_start(key, now=0.5), t.may_start(key, now=1.0)
([], False, True)
>>> t.crashed(key, "c3", now=1)          # the older crash is no longer kept for `fn logs`
['c2']
"""

from __future__ import annotations

from dataclasses import dataclass

Key = tuple[str, str]  # (function, version)
BACKOFF_S = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # pause before starting a version that failed n times


@dataclass
class _Drain:
    marked: float  # when it was chosen to go
    signalled: float | None = None  # when SIGTERM was sent


def backoff_s(failures: int) -> float:
    """The pause before starting a version whose replicas failed ``failures`` times before ready."""
    return BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]


class Tracker:
    def __init__(self, *, stop_delay_s: float, kill_after_s: float):
        self.stop_delay_s, self.kill_after_s = stop_delay_s, kill_after_s
        self.draining: dict[str, _Drain] = {}
        self.ready: dict[str, bool] = {}  # container id -> its last probe
        self.was_ready: set[str] = set()
        self.crashes: dict[str, Key] = {}  # crashed containers kept for `fn logs` (one per version)
        self.failures: dict[Key, tuple[int, float]] = {}  # (failures in a row, no start before)
        self.errors: dict[Key, str] = {}  # why the last start failed

    # --- containers -----------------------------------------------------------------------------

    def drain(self, container: str, *, now: float) -> None:
        self.draining.setdefault(container, _Drain(now))

    def signal(self, container: str, *, now: float) -> str | None:
        """The signal a draining container is due now, if any."""
        drain = self.draining.get(container)
        if drain is None:
            return None
        if drain.signalled is None:
            if now - drain.marked < self.stop_delay_s:
                return None
            drain.signalled = now
            return "SIGTERM"
        return "SIGKILL" if now - drain.signalled > self.kill_after_s else None

    def probed(self, container: str, ready: bool) -> None:
        self.ready[container] = ready
        if ready:
            self.was_ready.add(container)

    def crashed(self, key: Key, container: str, *, now: float) -> list[str]:
        """Count a crash once (a replica that had been ready restarts at once); returns the version's
        older crashed containers, no longer worth keeping."""
        if container in self.crashes:
            return []
        failures = 0 if container in self.was_ready else self.failures.get(key, (0, 0.0))[0] + 1
        self.failures[key] = (failures, now + backoff_s(failures))
        older = [c for c, k in self.crashes.items() if k == key]
        self.crashes[container] = key
        return older

    def forget(self, container: str) -> None:
        for known in (self.draining, self.ready, self.crashes):
            known.pop(container, None)
        self.was_ready.discard(container)

    # --- versions -------------------------------------------------------------------------------

    def may_start(self, key: Key, *, now: float) -> bool:
        return now >= self.failures.get(key, (0, 0.0))[1]

    def start_failed(self, key: Key, message: str, *, now: float) -> None:
        failures = self.failures.get(key, (0, 0.0))[0] + 1
        self.failures[key] = (failures, now + backoff_s(failures))
        self.errors[key] = message

    def started(self, key: Key) -> None:
        self.errors.pop(key, None)

    def forget_function(self, function: str) -> None:
        for known in (self.failures, self.errors):
            for key in [k for k in known if k[0] == function]:
                del known[key]

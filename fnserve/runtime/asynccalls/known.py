"""What one process knows of a function's asynchronous calls: waiting, running, held elsewhere.

Plain bookkeeping for :class:`~fnserve.runtime.asynccalls.queue.CallQueue`, on its event loop
(a run's ``lock`` is the one part shared with the store threads).
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from dataclasses import dataclass, field

from fnserve.runtime.asynccalls.records import Lease


@dataclass(eq=False)
class Run:
    """One run of a call in this process: its lease, and how far it got."""

    lease: Lease
    started_at: float
    task: asyncio.Task[None] | None = None
    claimed: bool = False  # its lease is written (only then is it renewed, or given back)
    ended: bool = False  # its leases are dropped: a renewal must not write one back
    lock: threading.Lock = field(default_factory=threading.Lock)  # renewal vs drop, across threads


@dataclass(eq=False)
class KnownCalls:
    """One function's calls as this process knows them."""

    name: str
    waiting: dict[str, int] = field(default_factory=dict)  # key -> runs claimed so far
    order: list[str] = field(default_factory=list)  # a heap of the waiting keys: oldest first
    running: dict[str, Run] = field(default_factory=dict)
    elsewhere: dict[str, int] = field(default_factory=dict)  # keys another live runner holds
    computing: int = 0  # runs inside the runner now (the rest of running claim, read or record)
    slots: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)  # concurrency: see CallQueue.known
    last_end: float = 0.0  # when (monotonic) the last computing ended
    turn_s: float = 0.0  # how long computing one takes, a moving average
    reserved: int = 0  # accepts being written now
    finished: dict[str, float] = field(default_factory=dict)  # recorded here lately (monotonic)
    times: dict[str, float] = field(default_factory=dict)  # outcomes' times a store does not list
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None

    @property
    def size(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.elsewhere) + self.reserved

    def add(self, key: str, runs: int) -> None:
        if key not in self.waiting and key not in self.running:
            self.waiting[key] = runs
            heapq.heappush(self.order, key)
            self.elsewhere.pop(key, None)
            self.wake.set()

    def next(self) -> tuple[str, int] | None:
        while self.order:
            key = heapq.heappop(self.order)
            if key in self.waiting:
                return key, self.waiting.pop(key)
        return None

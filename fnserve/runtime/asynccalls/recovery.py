"""How a queue finds what it does not know: the calls an earlier process left (waiting, or
claimed by a run whose lease ran out), those another process sharing the queue accepted, outcomes
past their time, callbacks still owed, and the temporary files of writes a kill cut short.

A scan reads ``requests/`` (and, for calls it does not know, ``leases/`` and ``results/``) every
``scan_interval_s``; a full one, at start and every ``result_ttl_s / 4`` (5 minutes at most), also
sweeps ``results/``, ``expired/`` and ``callbacks/``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from fnserve.runtime.asynccalls.known import KnownCalls
from fnserve.runtime.asynccalls.status import document
from fnserve.runtime.errors import StorageUnavailable

if TYPE_CHECKING:
    from fnserve.runtime.asynccalls.queue import CallQueue

log = logging.getLogger("fnserve.async")

TEMPORARY_KEPT_S = 600.0  # a temporary file this old was left by a write cut short: removed


class Recovery:
    """The scans of one :class:`~fnserve.runtime.asynccalls.queue.CallQueue`."""

    def __init__(self, queue: CallQueue):
        self.queue = queue
        self.storage = queue.storage

    async def loop(self) -> None:
        settings = self.queue.settings
        sweep_every_s = min(300.0, max(settings.scan_interval_s, settings.result_ttl_s / 4))
        swept = time.monotonic()
        while True:
            await asyncio.sleep(settings.scan_interval_s)
            full = time.monotonic() - swept >= sweep_every_s
            try:
                await self.scan(full=full)
            except StorageUnavailable as exc:
                log.warning("the queue of asynchronous calls could not be read: %s", exc.message)
            except Exception:  # the loop must outlive a bad file; the next scan tries again
                log.exception("scanning the queue of asynchronous calls failed")
            if full:
                swept = time.monotonic()

    async def scan(self, *, full: bool = False) -> None:
        """Find the calls this process does not know (left by an earlier process, or accepted by
        another), take over runs whose lease ran out; ``full``: also expire old outcomes and
        deliver callbacks still owed."""
        names = set(await self.queue.io(self.storage.functions)) | set(self.queue.functions)
        for name in sorted(names):
            if self.queue.runner.serves(name):
                await self._scan_function(self.queue.known(name), full)

    async def _scan_function(self, function: KnownCalls, full: bool) -> None:
        name, now = function.name, self.queue.clock()
        lately = time.monotonic() - 10 * self.queue.settings.scan_interval_s  # past any scan's race
        function.finished = {k: at for k, at in function.finished.items() if at > lately}
        keys = await self.queue.io(self.storage.requests, name)
        present = set(keys)
        unknown = [k for k in keys if k not in function.waiting and k not in function.running]
        recorded: dict[str, float | None] = {}
        if unknown or full:
            recorded = await self.queue.io(self.storage.outcomes, name)
        leases = await self.queue.io(self.storage.leases, name) if unknown else {}
        for key in unknown:
            if key in function.waiting or key in function.running or key in function.finished:
                continue  # taken, or even finished, here while this scan waited for the store
            if key in recorded:  # finished, but its request outlived a crash: clean up
                await self.queue.io(self.storage.drop_leases, name, key, leases.get(key, 0))
                await self.queue.io(self.storage.delete_request, name, key)
                continue
            runs = leases.get(key, 0)
            lease = await self.queue.io(self.storage.read_lease, name, key, runs) if runs else None
            if lease is None or lease.until < now:
                function.add(key, runs)
            else:
                function.elsewhere[key] = runs
        function.elsewhere = {k: n for k, n in function.elsewhere.items() if k in present}
        self.queue.count(function)
        if full:
            await self._sweep(function, recorded)

    async def _sweep(self, function: KnownCalls, recorded: dict[str, float | None]) -> None:
        """Expire outcomes past ``result_ttl_s``, drop tombstones as old again, deliver callbacks owed."""
        name, now, ttl = function.name, self.queue.clock(), self.queue.settings.result_ttl_s
        for key, at in recorded.items():
            if at is None:  # a store that gives no times: the outcome says (read once)
                if key not in function.times:
                    outcome = await self.queue.io(self.storage.read_outcome, name, key)
                    function.times[key] = outcome.finished_at if outcome else now
                at = function.times[key]
            if at + ttl < now:
                await self.queue.io(self.storage.expire, name, key)
                function.times.pop(key, None)
                self.queue.metrics.expired.labels(name).inc()
        for key, at in (await self.queue.io(self.storage.tombstones, name)).items():
            if at is not None and at + ttl < now:
                await self.queue.io(self.storage.forget, name, key)
        await self.queue.io(self.storage.clean_up, name, TEMPORARY_KEPT_S)
        for key, state in (await self.queue.io(self.storage.callback_marks, name)).items():
            if state == "pending" and key in recorded and not self.queue.callbacks.busy(name, key):
                outcome = await self.queue.io(self.storage.read_outcome, name, key)
                if outcome is not None and outcome.callback:
                    doc = document(outcome, ttl, None, for_callback=True)
                    self.queue.callbacks.deliver(name, key, outcome.id, outcome.callback, doc)

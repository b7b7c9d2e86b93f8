"""Where a call's status is found: this process's memory first, then the queue's files.

Looked for in that order (a call running or waiting here needs no store read), then its outcome,
its request and lease, its tombstone. An outcome is written before its request is removed, so a
call missing both was recorded meanwhile, or is unknown: the outcome is read once more before 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fnserve.runtime.asynccalls.records import Outcome, parse_id
from fnserve.runtime.asynccalls.status import document, pending_document
from fnserve.runtime.errors import FnError, NotFound

if TYPE_CHECKING:
    from fnserve.runtime.asynccalls.queue import CallQueue


class Gone(FnError):
    """A call's outcome expired (and was removed)."""

    status = 410


async def describe(queue: CallQueue, call_id: str) -> dict[str, Any]:
    """The status document of a call: 404 for an unknown id, 410 past its outcome's time."""
    outcome, name, key = await find(queue, call_id)
    if isinstance(outcome, dict):
        return outcome
    callback = None
    if outcome.callback:
        callback = await queue.io(queue.storage.callback_state, name, key)
    return document(outcome, queue.settings.result_ttl_s, callback)


async def find(queue: CallQueue, call_id: str) -> tuple[Outcome | dict[str, Any], str, str]:
    """``(outcome or status document of a call not finished, function, key)``."""
    name, key = parse_id(call_id)
    storage, ttl = queue.storage, queue.settings.result_ttl_s
    function = queue.functions.get(name)
    if function is not None and key in function.running:
        run = function.running[key]
        return pending_document(call_id, "running", run.started_at, run.lease.attempt), name, key
    if function is not None and key in function.waiting:
        return pending_document(call_id, "pending"), name, key
    outcome = await queue.io(storage.read_outcome, name, key)
    if outcome is None and await queue.io(storage.has_request, name, key):
        runs = (await queue.io(storage.leases, name)).get(key, 0)
        lease = await queue.io(storage.read_lease, name, key, runs) if runs else None
        if lease is not None and lease.until >= queue.clock():
            return pending_document(call_id, "running", None, runs), name, key
        return pending_document(call_id, "pending"), name, key
    if outcome is None:  # recorded (elsewhere) since it was looked for: a request goes after
        outcome = await queue.io(storage.read_outcome, name, key)
    if outcome is not None:
        if outcome.finished_at + ttl < queue.clock():
            raise gone(call_id, ttl)
        return outcome, name, key
    if await queue.io(storage.is_expired, name, key):
        raise gone(call_id, ttl)
    raise NotFound(
        f"no asynchronous call {call_id!r} here: the id is unknown, or its outcome expired "
        f"(outcomes are kept {ttl:g} s, then answer 410 Gone for as long again)"
    )


def gone(call_id: str, result_ttl_s: float) -> Gone:
    return Gone(
        f"the outcome of call {call_id!r} expired: outcomes are kept {result_ttl_s:g} s "
        "(setting async result_ttl_s)"
    )

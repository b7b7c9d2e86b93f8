"""How fast a backlog of asynchronous calls is worked off, as pure decisions.

Synchronous callers come first. With nobody waiting, a function computes up to ``concurrency`` of
its asynchronous calls at once. While synchronous work waits, it computes one at a time, and
starts the next only after a pause nine times as long as its calls take, and 20 ms at least
(``trickle_gap_s``): the backlog takes about a tenth of the time, and still moves.

"Waiting" means, on the runtime, requests served in the last 0.1 s (predictions, submits; not the
reads of a call's status: a client waiting for its call must not slow it down), or more rows in
the function's batcher than its asynchronous calls being computed account for; on the gateway,
synchronous requests in flight while the function's replicas are at their target load
(``target_in_flight`` per ready replica). The store work of a call (claiming, reading, recording
its outcome) is not paced: it overlaps, in the queue's own threads.

>>> may_start(running=3, concurrency=4, busy=False), may_start(running=4, concurrency=4, busy=False)
(True, False)
>>> may_start(running=1, concurrency=4, busy=True)           # one at a time while others wait
False
>>> may_start(running=0, concurrency=4, busy=True, idle_s=0.015, turn_s=0.001)  # ... after a pause
False
>>> may_start(running=0, concurrency=4, busy=True, idle_s=0.025, turn_s=0.001)
True
"""

from __future__ import annotations

import math

RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
TRICKLE_SHARE = 0.1  # of the time, at most, that calls take while synchronous work waits
TRICKLE_MIN_GAP_S = 0.02  # the shortest pause between two calls then: a call's store work and
#   its request's own cost (parsing, routing, encoding) are not in its time, so at most 50 a second


def may_start(
    *, running: int, concurrency: int, busy: bool, idle_s: float = math.inf, turn_s: float = 0.0
) -> bool:
    """Whether one more asynchronous call of a function may start now: ``running`` are being
    computed, the last ended ``idle_s`` ago, and they take ``turn_s`` each (a recent average)."""
    if not busy:
        return running < concurrency
    return running == 0 and idle_s >= trickle_gap_s(turn_s)


def trickle_gap_s(turn_s: float) -> float:
    """The pause between two calls while synchronous work waits: calls take a tenth of the time.

    >>> trickle_gap_s(0.005), trickle_gap_s(0.0)
    (0.045, 0.02)
    """
    return round(max(TRICKLE_MIN_GAP_S, turn_s * (1 - TRICKLE_SHARE) / TRICKLE_SHARE), 9)


def retry_wait_s(attempt: int, retry_after_s: float | None = None) -> float:
    """How long a call waits before run ``attempt + 1`` after a 429/502/503/504: the answer's
    ``Retry-After`` if it gave one (within bounds), else a doubling backoff.

    >>> retry_wait_s(1), retry_wait_s(3), retry_wait_s(10), retry_wait_s(1, retry_after_s=4.0)
    (0.5, 2.0, 30.0, 4.0)
    """
    if retry_after_s is not None:
        return min(max(retry_after_s, RETRY_MIN_S), RETRY_MAX_S)
    return min(RETRY_MIN_S * 2 ** (attempt - 1), RETRY_MAX_S)


def queue_retry_after_s(waiting: int, completed_per_s: float) -> int:
    """``Retry-After`` for a call refused because the queue is full: the time a tenth of the calls
    waiting take at the rate calls complete now (so retries come back spread out, as room is made),
    from 1 s to an hour; a minute when no call has completed lately.

    >>> queue_retry_after_s(1000, 25.0), queue_retry_after_s(10, 0.0), queue_retry_after_s(10**9, 1.0)
    (4, 60, 3600)
    """
    if completed_per_s <= 0:
        return 60
    return min(3600, max(1, math.ceil(waiting / 10 / completed_per_s)))

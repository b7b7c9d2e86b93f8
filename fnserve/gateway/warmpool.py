"""A warm pool: replicas started ahead, standing by, so a version scaled to zero wakes in a fraction
of a cold start.

A standby is the runtime started with ``--standby`` (``python -m fnserve.runtime FOLDER --standby``):
it imports the runtime, the function file and the framework its checkpoint runs on, fetches that
checkpoint into its cache, and waits, listening but not ready and invisible to the gateway. Scaling
up claims one instead of starting a process or container: SIGUSR1 makes it load its model and serve,
and the pool is refilled once nothing of the function is starting (a refill never competes with a
cold start for the CPU). ``[scale] warm_pool`` (``fn deploy --warm-pool N``) says how many each
version keeps while it may scale to zero (``min_replicas = 0``); 0 turns the pool off.

The price is memory: a standby holds the framework (TensorFlow: a few hundred MB) but no model. A
pool that does not fit (less memory available than ``standby_bytes`` needs) or whose standby dies
falls back to plain starts with a warning; plain starts are what the pool only speeds up.

>>> plan_pool(wanted=1, fresh=(), outdated=("old",), starting=False, available_bytes=8 << 30)
PoolPlan(start=1, stop=('old',), short_of_memory=False)
>>> plan_pool(wanted=1, fresh=(), outdated=(), starting=True, available_bytes=8 << 30)  # a start runs
PoolPlan(start=0, stop=(), short_of_memory=False)
>>> plan_pool(wanted=1, fresh=(), outdated=(), starting=False, available_bytes=100 << 20)
PoolPlan(start=0, stop=(), short_of_memory=True)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fnserve.gateway.platform import Scaling

STANDBY_BYTES = 1 << 30  # memory a standby may take (TensorFlow imported: ~0.5 GiB), with headroom
POOL_RETRY_S = 60.0  # after a standby died or memory was short, plain starts for this long
log = logging.getLogger("fnserve.gateway")


@dataclass(frozen=True)
class PoolPlan:
    start: int  # standbys to start now
    stop: tuple[str, ...]  # standbys to stop (outdated, or more than wanted)
    short_of_memory: bool  # one was wanted but does not fit: plain starts, with a warning


def plan_pool(
    *,
    wanted: int,
    fresh: Sequence[str],
    outdated: Sequence[str],
    starting: bool,
    available_bytes: int | None,
    standby_bytes: int = STANDBY_BYTES,
) -> PoolPlan:
    """What a version's pool needs: ``fresh`` standbys of its current spec (their ids, oldest first:
    the oldest go when there are too many), ``outdated`` ones of a previous spec; ``starting``: a
    replica of the function is starting now (refill after it); ``available_bytes``: memory free
    for new processes (None: unknown, assumed enough)."""
    stop = (*outdated, *fresh[: max(0, len(fresh) - wanted)])
    if len(fresh) >= wanted or starting:
        return PoolPlan(0, stop, False)
    need = wanted - len(fresh)
    if available_bytes is not None and available_bytes < need * standby_bytes:
        return PoolPlan(0, stop, True)
    return PoolPlan(need, stop, False)


def plan_version_pool(
    function: str,
    label: str,
    scaling: Scaling | None,
    paused_until: float,
    now: float,
    *,
    fresh: Sequence[str],
    outdated: Sequence[str],
    starting: bool,
) -> tuple[PoolPlan, float]:
    """:func:`plan_pool` for one version of a platform's: its size from ``scaling`` (None: the
    version is gone), memory read only when a standby is wanted, and a plan short of memory
    logged and paused for ``POOL_RETRY_S``. Returns the plan and when the pool's pause ends."""
    wanted = pool_size(scaling, paused_until, now)
    available = available_memory_bytes() if wanted > len(fresh) else None
    plan = plan_pool(
        wanted=wanted, fresh=fresh, outdated=outdated, starting=starting, available_bytes=available
    )
    if plan.short_of_memory:
        log.warning(
            "%s@%s: not enough memory for a warm-pool standby (%s MiB available, one needs about %d MiB); "
            "plain starts",
            function,
            label,
            (available or 0) >> 20,
            STANDBY_BYTES >> 20,
        )
        paused_until = now + POOL_RETRY_S
    return plan, paused_until


def pool_size(scaling: Scaling | None, paused_until: float, now: float) -> int:
    """Standbys a version should keep: ``warm_pool`` while it may scale to zero and its pool is
    not paused (a standby died, memory was short), else 0."""
    if scaling is None or scaling.min_replicas != 0 or now < paused_until:
        return 0
    return scaling.warm_pool


def available_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's estimate of memory available to new processes (``MemAvailable``), or None.

    >>> isinstance(available_memory_bytes(), int | None)
    True
    """
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

"""Least outstanding requests over one version's ready replicas, and when to try another one.

The balancer routes only to replicas the platform reports ready and not draining. A replica
that refused a connection is set aside for a short while even if the platform still lists it
(a cluster's view lags a crash by seconds). Ties are broken in turn, so at concurrency 1 the
replicas still share the load.

>>> b = Balancer(lambda url: url)
>>> b.update([Replica("f", "1", "http://a", True), Replica("f", "1", "http://b", True)])
>>> first = b.pick(); first.outstanding += 1
>>> b.pick().url != first.url
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from fnserve.gateway.platform import Replica

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})
SET_ASIDE_S = 2.0  # a replica that refused a connection gets no traffic for this long


class Endpoint:
    """A routable replica with its connection pool and the requests it holds now."""

    __slots__ = ("draining", "outstanding", "pool", "replica", "url")

    def __init__(self, replica: Replica, pool: Any):
        self.replica, self.url, self.pool = replica, replica.url, pool
        self.outstanding = 0
        self.draining = False


class Balancer:
    """One version's endpoints. ``pool_for(url)`` makes the connection pool of a new replica."""

    def __init__(self, pool_for: Callable[[str], Any]):
        self.pool_for = pool_for
        self.endpoints: list[Endpoint] = []
        self.known: dict[str, Endpoint] = {}  # every replica seen, routable or not (keeps pools)
        self.set_aside: dict[str, float] = {}  # url -> monotonic time it may be used again
        self._turn = 0

    def update(self, replicas: Iterable[Replica]) -> None:
        """Replace the routable set with the platform's latest view; counts and pools carry over."""
        now = time.monotonic()
        routable, seen = [], {}
        for replica in replicas:
            endpoint = self.known.get(replica.url)
            if endpoint is None:
                endpoint = Endpoint(replica, self.pool_for(replica.url))
            endpoint.replica, endpoint.draining = replica, replica.draining
            seen[replica.url] = endpoint
            if replica.ready and not replica.draining and self.set_aside.get(replica.url, 0.0) <= now:
                routable.append(endpoint)
        for url, gone in self.known.items():
            if url not in seen and gone.outstanding == 0:
                gone.pool.close()
            elif url not in seen:
                gone.draining = True
                seen[url] = gone  # closed once its last request is answered
        self.known, self.endpoints = seen, routable
        self.set_aside = {url: t for url, t in self.set_aside.items() if t > now}

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The routable endpoint with the fewest outstanding requests; None if there is none."""
        endpoints = self.endpoints
        n = len(endpoints)
        if n == 1:
            only = endpoints[0]
            return None if only in exclude else only
        best: Endpoint | None = None
        start = self._turn = (self._turn + 1) % n if n else 0
        for i in range(n):
            endpoint = endpoints[(start + i) % n]
            if endpoint in exclude:
                continue
            if best is None or endpoint.outstanding < best.outstanding:
                best = endpoint
        return best

    def refused(self, endpoint: Endpoint) -> None:
        """The endpoint refused a connection: route around it until it proves ready again."""
        self.set_aside[endpoint.url] = time.monotonic() + SET_ASIDE_S
        if endpoint in self.endpoints:
            self.endpoints = [e for e in self.endpoints if e is not endpoint]

    @property
    def ready(self) -> int:
        return len(self.endpoints)

    def close(self) -> None:
        for endpoint in self.known.values():
            endpoint.pool.close()


def may_retry(method: bytes, *, reached: bool, status: int | None = None, draining: bool = False) -> bool:
    """Whether a failed attempt may go to another replica.

    Never reached the replica (connection refused, reset before sending): any method. Reached it
    but got no answer (the replica died mid-request), or a 502/503 from a draining replica: only
    idempotent methods, which are safe to send twice.

    >>> may_retry(b"POST", reached=False), may_retry(b"POST", reached=True), may_retry(b"GET", reached=True)
    (True, False, True)
    >>> may_retry(b"GET", reached=True, status=503, draining=False)
    False
    """
    if not reached:
        return True
    if method not in IDEMPOTENT:
        return False
    return status is None or (status in (502, 503) and draining)

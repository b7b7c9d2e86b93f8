"""Load balancing by value: least outstanding requests, never a draining replica, retry rules."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from fnserve.gateway.balancer import Balancer, Endpoint, may_retry
from fnserve.gateway.platform import Replica


class FakePool:
    def __init__(self, url: str):
        self.url, self.closed = url, False

    def close(self) -> None:
        self.closed = True


def replica(url: str, *, ready: bool = True, draining: bool = False) -> Replica:
    return Replica("f", "1", url, ready, draining)


def balancer(*replicas: Replica) -> Balancer:
    b = Balancer(FakePool)
    b.update(replicas)
    return b


def test_picks_the_replica_with_fewest_outstanding_requests() -> None:
    b = balancer(replica("a"), replica("b"), replica("c"))
    counts = {"a": 3, "b": 1, "c": 2}
    for e in b.endpoints:
        e.outstanding = counts[e.url]
    assert b.pick().url == "b"  # type: ignore[union-attr]


def test_ties_take_turns_so_sequential_requests_share_the_replicas() -> None:
    b = balancer(replica("a"), replica("b"))
    seen = Counter(b.pick().url for _ in range(100))  # type: ignore[union-attr]
    assert seen == {"a": 50, "b": 50}


def test_never_routes_to_draining_or_unready_replicas() -> None:
    b = balancer(replica("a", draining=True), replica("b", ready=False), replica("c"))
    assert [e.url for e in b.endpoints] == ["c"]
    assert {b.pick().url for _ in range(10)} == {"c"}  # type: ignore[union-attr]
    b.update([replica("c", draining=True)])
    assert b.pick() is None


def test_excluded_endpoints_are_skipped() -> None:
    b = balancer(replica("a"), replica("b"))
    a = next(e for e in b.endpoints if e.url == "a")
    assert b.pick([a]).url == "b"  # type: ignore[union-attr]
    assert b.pick(b.endpoints) is None


def test_a_refused_replica_is_set_aside_even_while_the_platform_still_lists_it() -> None:
    b = balancer(replica("a"), replica("b"))
    a = next(e for e in b.endpoints if e.url == "a")
    b.refused(a)
    b.update([replica("a"), replica("b")])  # the platform's view lags the crash
    assert [e.url for e in b.endpoints] == ["b"]


def test_update_keeps_counts_and_pools_and_closes_pools_of_replicas_gone() -> None:
    b = balancer(replica("a"), replica("b"))
    a, bb = b.known["a"], b.known["b"]
    a.outstanding = 2
    b.update([replica("a")])
    assert b.known["a"] is a and a.outstanding == 2
    pool: Any = bb.pool
    assert pool.closed and "b" not in b.known


def test_a_replica_gone_with_requests_in_flight_keeps_its_pool_until_they_end() -> None:
    b = balancer(replica("a"))
    a: Endpoint = b.known["a"]
    a.outstanding = 1
    b.update([])
    pool: Any = a.pool
    assert not pool.closed and a.draining and b.pick() is None
    a.outstanding = 0
    b.update([])
    assert pool.closed


@pytest.mark.parametrize(
    ("method", "reached", "status", "draining", "expected"),
    [
        (b"POST", False, None, False, True),  # never reached a replica: any method
        (b"GET", False, None, False, True),
        (b"POST", True, None, False, False),  # reached it, it died: not idempotent, not again
        (b"GET", True, None, False, True),  # idempotent: safe to send again
        (b"HEAD", True, None, False, True),
        (b"GET", True, 503, True, True),  # a draining replica's 503
        (b"GET", True, 503, False, False),  # a replica's own overload answer goes to the caller
        (b"POST", True, 503, True, False),
        (b"GET", True, 500, True, False),
    ],
)
def test_retry_rules(
    method: bytes, reached: bool, status: int | None, draining: bool, expected: bool
) -> None:
    assert may_retry(method, reached=reached, status=status, draining=draining) is expected

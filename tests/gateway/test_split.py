"""Traffic splits by value: weighted choice, sticky keys, parsing, rebalancing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fnserve.gateway.split import Split, SplitError, parse_weights, rebalance, sticky_point


def test_points_map_to_versions_by_cumulative_weight() -> None:
    split = Split({"a": 90, "b": 0, "c": 10})
    assert [split.choose(point=p) for p in (0, 89, 90, 99)] == ["a", "a", "c", "c"]
    assert "b" not in split.labels  # weight 0: reachable only when pinned


def test_a_single_version_needs_no_draw() -> None:
    split = Split({"old": 0, "new": 100})
    assert split.only == "new" and split.choose("any key") == "new"


def test_random_choice_follows_the_weights() -> None:
    random.seed(7)
    split = Split({"3": 90, "4": 10})
    counts = Counter(split.choose() for _ in range(20_000))
    assert abs(counts["4"] / 20_000 - 0.10) < 0.01


def test_a_sticky_key_always_gets_the_same_version_and_keys_spread_by_weight() -> None:
    split = Split({"3": 50, "4": 50})
    first = {f"user-{i}": split.choose(f"user-{i}", salt="recs") for i in range(2000)}
    again = {key: split.choose(key, salt="recs") for key in first}
    assert first == again
    assert 0.45 < Counter(first.values())["4"] / 2000 < 0.55


def test_moving_weight_moves_only_the_callers_in_the_moved_band() -> None:
    before, after = Split({"3": 90, "4": 10}), Split({"3": 80, "4": 20})
    keys = [f"u{i}" for i in range(2000)]
    moved = [k for k in keys if before.choose(k, salt="f") != after.choose(k, salt="f")]
    assert all(before.choose(k, salt="f") == "3" and after.choose(k, salt="f") == "4" for k in moved)
    assert all(80 <= sticky_point("f", k) < 90 for k in moved)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": 90, "b": 20}, "add up to 100, got 110"),
        ({"a": 101}, "integer 0-100"),
        ({"a": 50.0, "b": 50}, "integer 0-100"),
        ({}, "add up to 100, got 0"),
    ],
)
def test_bad_weights_are_refused_with_the_reason(weights: dict[str, int], message: str) -> None:
    with pytest.raises(SplitError, match=message):
        Split(weights)


def test_parse_weights_reads_the_cli_form() -> None:
    assert parse_weights(["v3=90", "v4=10"]) == {"v3": 90, "v4": 10}
    for bad, message in [
        (["v3"], "VERSION=WEIGHT"),
        (["v3=x"], "VERSION=WEIGHT"),
        (["a=50", "a=50"], "twice"),
    ]:
        with pytest.raises(SplitError, match=message):
            parse_weights(bad)


def test_rebalance_keeps_proportions_and_adds_up_to_100() -> None:
    assert rebalance({"1": 100}, "2", 10) == {"1": 90, "2": 10}
    assert rebalance({"1": 50, "2": 50}, "3", 10) == {"1": 45, "2": 45, "3": 10}
    assert sum(rebalance({"1": 33, "2": 33, "3": 34}, "4", 7).values()) == 100
    assert rebalance({"1": 0, "2": 100}, "2", 0) == {"1": 100, "2": 0}
    assert rebalance({}, "1", 30) == {"1": 100}

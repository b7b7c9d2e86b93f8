"""Rollouts end to end on the local target: a real gateway, real replicas, a prober throughout.

The ``weighted`` test function answers ``x * weight`` with the weight its checkpoint holds, so each
answer says which checkpoint computed it: a good checkpoint (weight 2.02 after 2.0) passes shadow
and canary and is promoted; a bad one (weight 9) is rolled back at the shadow stage without any
caller seeing its answers; a version that fails its requests is rolled back at the canary stage
with at most about the canary's share of requests affected.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest

from fnserve.gateway.rollout import RolloutPolicy
from tests.support.gateways import FNS, RunningGateway, deployment, running_gateway, until
from tests.support.probe import prober

pytestmark = pytest.mark.slow

GATES = {"mean_abs_diff": 0.5, "p99_latency_ratio": 50.0, "output_psi": False}  # latency: a busy CI machine


def with_policy(d: Any, **table: Any) -> Any:
    return dataclasses.replace(d, policy=RolloutPolicy.from_table(table, where="[rollout]"))


def rollout_of(gw: RunningGateway) -> dict[str, Any]:
    return gw.status("weighted")


def ended(gw: RunningGateway) -> dict[str, Any] | None:
    status = rollout_of(gw)
    rollout = status.get("rollout")
    return status if rollout and rollout["status"] != "active" else None


def event_time(status: dict[str, Any], kind: str) -> float:
    return next(e["at"] for e in status["events"] if e["kind"] == kind)


def test_new_checkpoints_are_shadowed_then_promoted_or_rolled_back(
    tmp_path: Path, publish_weight: Any
) -> None:
    first = publish_weight("2.0")
    stages = [{"shadow": True, "requests": 40}, {"weight": 50, "requests": 40}, {"weight": 100}]
    weighted = with_policy(
        deployment("weighted", ("1", "weighted", 100, str(first))), stages=stages, gates=GATES
    )
    with running_gateway(tmp_path, [weighted], rollouts=True) as gw:
        gw.wait_ready("weighted", "1", 1)
        with prober(gw.url) as answers:
            until(lambda: len(answers) > 20, "the prober's first answers")
            good = publish_weight("2.02")
            promoted = until(lambda: ended(gw), "the good checkpoint's rollout to end", 90)
            assert promoted["rollout"]["status"] == "promoted", promoted["events"]
            label = f"ckpt{good}"
            assert promoted["rollout"]["candidate"] == label
            until(lambda: sum(a.version == label for a in answers[-20:]) == 20, "the promoted version alone")
            bad = publish_weight("9")
            until(
                lambda: (s := ended(gw)) and s["rollout"]["candidate"] == f"ckpt{bad}" and s,
                "the bad checkpoint's rollout to end",
                90,
            )
            settled = len(answers)
            until(lambda: len(answers) > settled + 20, "more answers after the rollback")
        final = rollout_of(gw)
    kinds = [e["kind"] for e in final["events"]]
    assert kinds == ["started", "advanced", "promoted", "started", "rolled back"], final["events"]
    assert len(answers) >= 400 and all(a.status == 200 for a in answers)  # nothing failed any caller
    canary_from = event_time(promoted, "advanced")
    good_answers = [a for a in answers if a.value == pytest.approx(2.02)]
    assert good_answers and min(a.at for a in good_answers) >= canary_from - 0.05  # not before the canary
    assert all(a.version == label for a in good_answers)
    assert not any(a.value == pytest.approx(9.0) for a in answers)  # the bad one answered nobody
    reason = final["rollout"]["reason"]
    assert final["rollout"]["status"] == "rolled back" and reason.startswith(
        "mean_abs_diff 6.98 (≤ 0.5) over "
    ), reason
    assert final["rollout"]["stage"] == 0  # at the shadow stage
    assert {v["version"]: v["weight"] for v in final["versions"]} == {"1": 0, label: 100}


def test_a_failing_version_is_rolled_back_at_the_canary_stage(tmp_path: Path, publish_weight: Any) -> None:
    first = publish_weight("2.0")
    stages = [{"weight": 20, "requests": 200}, {"weight": 100}]
    weighted = with_policy(
        deployment("weighted", ("1", "weighted", 100, str(first))),
        stages=stages,
        gates={"p99_latency_ratio": False},  # its failures are slow too: the error rate is the gate here
        min_requests=10,
    )
    with running_gateway(tmp_path, [weighted]) as gw:
        gw.wait_ready("weighted", "1", 1)
        with prober(gw.url) as answers:
            until(lambda: len(answers) > 20, "the prober's first answers")
            faulty = {"version": "2", "image": str(FNS / "weighted_faulty"), "checkpoint_version": str(first)}
            started = gw.admin("PUT", "/functions/weighted", faulty)
            assert started.status_code == 200, started.text
            assert started.json()["rollout"]["candidate"] == "2"
            done = until(lambda: ended(gw), "the failing version's rollout to end", 90)
            back = event_time(done, "rolled back")
            until(lambda: sum(a.at > back + 0.5 for a in answers) > 50, "answers well after the rollback")
    assert done["rollout"]["status"] == "rolled back"
    assert done["rollout"]["reason"].startswith("error_rate 1 (≤ 0.01) over "), done["rollout"]["reason"]
    failed = [a for a in answers if a.status != 200]
    assert failed and all(a.version == "2" for a in failed)
    after = [a for a in answers if a.at > event_time(done, "rolled back") + 0.5]
    assert after and all(a.status == 200 for a in after)
    during = [a for a in answers if event_time(done, "started") <= a.at <= event_time(done, "rolled back")]
    assert len(failed) <= 0.4 * len(during)  # about the canary's 20%, never everyone


def test_pause_resume_and_by_hand(tmp_path: Path, publish_weight: Any) -> None:
    first = publish_weight("2.0")
    weighted = with_policy(
        deployment("weighted", ("1", "weighted", 100, str(first))),
        stages=[{"weight": 10, "requests": 100000}, {"weight": 100}],
    )
    with running_gateway(tmp_path, [weighted], rollouts=True) as gw:
        gw.wait_ready("weighted", "1", 1)
        second = publish_weight("2.5")
        until(
            lambda: (rollout_of(gw).get("rollout") or {}).get("candidate") == f"ckpt{second}", "a candidate"
        )
        paused = gw.admin("POST", "/functions/weighted/rollout", {"paused": True})
        assert paused.status_code == 200 and paused.json()["rollout"]["paused"] is True
        assert gw.admin("POST", "/functions/weighted/rollout", {"paused": "yes"}).status_code == 422
        resumed = gw.admin("POST", "/functions/weighted/rollout", {"paused": False}).json()
        assert resumed["rollout"]["paused"] is False
        promoted = gw.admin("POST", "/functions/weighted/promote", {"version": f"ckpt{second}"}).json()
        assert (
            promoted["rollout"]["status"] == "promoted"
            and promoted["rollout"]["reason"] == "promoted by hand"
        )
        assert [e["kind"] for e in promoted["events"]] == ["started", "paused", "resumed", "promoted"]
        nothing = gw.admin("POST", "/functions/weighted/rollout", {"paused": True})
        assert nothing.status_code == 409 and "no rollout in progress" in nothing.json()["error"]
        shown = httpx.get(f"{gw.url}/dashboard/data", timeout=10).json()["functions"][0]["rollout"]
        assert shown["status"] == "promoted" and shown["candidate"] == f"ckpt{second}"
        assert shown["decisions"][-1]["message"] == f"version ckpt{second} promoted to 100% by hand"
        metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
        assert 'fnserve_rollout_decisions_total{decision="paused",function="weighted"} 1.0' in metrics


def test_a_restarted_gateway_resumes_the_rollout_from_its_recorded_stage(
    tmp_path: Path, publish_weight: Any
) -> None:
    first = publish_weight("2.0")
    stages = [{"shadow": True, "requests": 30}, {"weight": 50, "requests": 30}, {"weight": 100}]
    weighted = with_policy(
        deployment("weighted", ("1", "weighted", 100, str(first))),
        stages=stages,
        gates=GATES,
        shadow_fraction=1.0,
    )
    with running_gateway(tmp_path, [weighted], rollouts=True) as gw:
        gw.wait_ready("weighted", "1", 1)
        second = publish_weight("2.01")
        with prober(gw.url, threads=2):
            until(lambda: (rollout_of(gw).get("rollout") or {}).get("stage") == 1, "the canary stage", 60)
    # stopped in the middle of the canary stage; a new gateway over the same saved state
    with running_gateway(tmp_path, rollouts=True) as gw:
        resumed = rollout_of(gw)
        assert resumed["rollout"]["status"] == "active" and resumed["rollout"]["stage"] == 1
        assert {v["version"]: v["weight"] for v in resumed["versions"]} == {"1": 50, f"ckpt{second}": 50}
        with prober(gw.url, threads=2) as answers:
            done = until(lambda: ended(gw), "the resumed rollout to end", 90)
    assert done["rollout"]["status"] == "promoted"
    assert [e["kind"] for e in done["events"]] == ["started", "advanced", "promoted"]  # once each
    assert answers and all(a.status == 200 for a in answers)


def test_a_candidate_that_never_gets_ready_is_rolled_back_with_the_reason(
    tmp_path: Path, publish_weight: Any
) -> None:
    first = publish_weight("2.0")
    weighted = with_policy(deployment("weighted", ("1", "weighted", 100, str(first))), ready_timeout_s=3)
    with running_gateway(tmp_path, [weighted], rollouts=True) as gw:
        gw.wait_ready("weighted", "1", 1)
        broken = tmp_path / "broken-checkpoint"
        broken.mkdir()
        (broken / "weight.txt").write_text("not a number")  # its loader fails: never ready
        from fnserve.runtime.store import CheckpointStore

        bad = CheckpointStore(f"file://{tmp_path}/store", cache_dir=tmp_path / "c2").publish(
            "weighted", broken
        )
        with prober(gw.url, threads=2) as answers:
            done = until(lambda: ended(gw), "the unready candidate's rollout to end", 60)
    reason = done["rollout"]["reason"]
    assert done["rollout"]["candidate"] == f"ckpt{bad}" and done["rollout"]["status"] == "rolled back"
    assert reason.startswith(f"no replica of version ckpt{bad} became ready within "), reason
    assert "could not convert string to float" in reason  # the loader's own error, from the replica
    assert answers and all(a.status == 200 for a in answers)

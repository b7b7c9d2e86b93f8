"""Rollout policies, the state changes of a rollout, and how a stage is judged — as data, no server."""

from __future__ import annotations

import time

import pytest

from fnserve.gateway import deployments
from fnserve.gateway.analysis import ShadowWindow, StageWindow, judge, numbers
from fnserve.gateway.platform import FunctionDeployment, VersionDeployment
from fnserve.gateway.release import max_input_psi
from fnserve.gateway.rollout import ACTIVE, PROMOTED, ROLLED_BACK, RolloutPolicy, Stage
from fnserve.runtime.errors import ConfigError

TWO_STAGES = {"stages": [{"shadow": True, "requests": 10}, {"weight": 20, "requests": 10}, {"weight": 100}]}


def policy(**table: object) -> RolloutPolicy:
    return RolloutPolicy.from_table({**TWO_STAGES, **table}, where="[rollout]")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"stage": []}, "[rollout] has unknown key 'stage'"),
        ({"stages": []}, "stages must be a non-empty list"),
        ({"stages": [{"weight": 10}]}, "the last stage must be { weight = 100 }"),
        ({"stages": [{"weight": 150}]}, "stages[0] weight must be an integer 1-100"),
        ({"stages": [{"shadow": True, "weight": 5}, {"weight": 100}]}, "a shadow stage has no weight"),
        ({"stages": [{"weight": 50}, {"weight": 10}, {"weight": 100}]}, "canary weights must not decrease"),
        ({"stages": [{"weight": 100, "requests": 0}]}, "requests must be at least 1"),
        ({"stages": [{"weight": 100, "size": 3}]}, "stages[0] has unknown key 'size'"),
        ({"gates": {"accuracy": 0.1}}, "gates: no metric 'accuracy'; known: error_rate"),
        ({"gates": {"error_rate": "low"}}, "gates.error_rate must be a number"),
        ({"stages": [{"weight": 100}], "gates": {"mean_abs_diff": 0.1}}, "measured in shadow stages only"),
        ({"shadow_fraction": 0}, "shadow_fraction must be in (0, 1]"),
    ],
)
def test_a_malformed_policy_names_the_key_and_what_was_expected(
    table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RolloutPolicy.from_table(table, where="[rollout]")
    assert message in caught.value.message


def test_defaults_and_round_trip() -> None:
    default = RolloutPolicy.from_table({}, where="[rollout]")
    assert [s.describe() for s in default.stages] == [
        "shadow for 200 requests",
        "weight 10 for 200 requests",
        "weight 50 for 200 requests",
        "weight 100",
    ]
    assert default.gates == {"error_rate": 0.01, "p99_latency_ratio": 2.0, "output_psi": 0.25}
    off = RolloutPolicy.from_table({"gates": {"output_psi": False, "mean_abs_diff": 0.2}}, where="x")
    assert off.gates == {"error_rate": 0.01, "p99_latency_ratio": 2.0, "mean_abs_diff": 0.2}
    assert RolloutPolicy.from_dict(off.to_dict()) == off


def two_versions(p: RolloutPolicy | None = None) -> FunctionDeployment:
    return FunctionDeployment(
        name="recs",
        versions={"1": VersionDeployment("img:1", 100, "3"), "ckpt4": VersionDeployment("img:1", 0, "4")},
        policy=p or policy(),
    )


def test_a_rollout_goes_stage_by_stage_and_is_saved_as_json() -> None:
    d = deployments.start_rollout(
        two_versions(), "ckpt4", 1000.0, checkpoint=4, why="checkpoint 4 was published"
    )
    assert d.weights() == {"1": 100, "ckpt4": 0}  # shadow: the candidate answers nobody
    assert d.rollout is not None and (d.rollout.stable, d.rollout.stage, d.rollout.status) == ("1", 0, ACTIVE)
    d = deployments.advance_rollout(d, 1010.0, "mean_abs_diff 0.01 (≤ 0.1)")
    assert d.weights() == {"1": 80, "ckpt4": 20}
    d = deployments.advance_rollout(d, 1020.0, "error_rate 0 (≤ 0.01)")
    assert d.weights() == {"1": 0, "ckpt4": 100}
    assert d.rollout is not None and d.rollout.status == PROMOTED
    assert [e["kind"] for e in d.events] == ["started", "advanced", "promoted"]
    assert "checkpoint 4 was published" in d.events[0]["message"]
    assert FunctionDeployment.from_dict(d.to_dict()) == d
    assert deployments.rollback(d).weights() == {
        "1": 80,
        "ckpt4": 20,
    }  # fn rollback after it: the split before


def test_a_failed_stage_goes_back_to_stable_and_the_checkpoint_is_not_retried() -> None:
    d = deployments.start_rollout(two_versions(), "ckpt4", 0.0, checkpoint=4, why="test")
    d = deployments.advance_rollout(d, 1.0, "ok")
    failed = deployments.fail_rollout(d, 2.0, "error_rate 0.4 (≤ 0.01) over 30 candidate answers")
    assert failed.weights() == {"1": 100} and "ckpt4" not in failed.versions
    assert failed.rollout is not None and failed.rollout.status == ROLLED_BACK
    assert failed.rejected == (4,)
    assert "rolled back at stage 2: error_rate 0.4" in failed.events[-1]["message"]
    with pytest.raises(deployments.DeployError, match="no rollout in progress"):
        deployments.fail_rollout(failed, 3.0, "again")


def test_overrides_by_hand() -> None:
    d = deployments.start_rollout(two_versions(), "ckpt4", 0.0, why="test")
    with pytest.raises(deployments.DeployError, match="already rolling out"):
        deployments.start_rollout(d, "ckpt4", 0.0, why="again")
    paused = deployments.pause_rollout(d, 5.0, True)
    assert paused.rollout is not None and paused.rollout.paused
    resumed = deployments.pause_rollout(paused, 9.0, False)
    assert resumed.rollout is not None and resumed.rollout.stage_started == 9.0  # the stage starts again
    promoted = deployments.promote_by_hand(d, "ckpt4", 6.0)
    assert promoted.weights() == {"1": 0, "ckpt4": 100}
    assert promoted.rollout is not None and promoted.rollout.reason == "promoted by hand"
    other = deployments.promote_by_hand(d, "1", 6.0)
    assert other.weights() == {"1": 100} and other.rollout is not None and other.rollout.status == ROLLED_BACK


def test_a_new_version_of_a_function_with_a_policy_is_refused_without_a_stable_one() -> None:
    alone = FunctionDeployment("recs", {"1": VersionDeployment("img", 100)}, policy=policy())
    with pytest.raises(deployments.DeployError, match="needs a stable version"):
        deployments.start_rollout(alone, "1", 0.0, why="test")
    with pytest.raises(deployments.DeployError, match="no rollout policy"):
        deployments.start_rollout(
            FunctionDeployment("recs", {"1": VersionDeployment("img")}), "1", 0.0, why="x"
        )


def test_answers_pair_into_agreement_figures() -> None:
    assert numbers(b'{"predictions":[{"b":0.9,"a":0.1}]}') == [0.1, 0.9]  # objects by sorted key
    assert numbers(b'{"outputs":[{"name":"y","data":[1,2]},{"name":"x","data":[3]}]}') == [3.0, 1.0, 2.0]
    assert numbers(b'{"predictions":["text"]}') is None and numbers(b"\x00arrow") is None
    window = ShadowWindow()
    for i in range(100):
        stable = i / 100
        window.add(
            f'{{"predictions":[{stable}]}}'.encode(), f'{{"predictions":[{stable + 0.01}]}}'.encode(), 0.001
        )
    assert window.mean_abs_diff() == pytest.approx(0.01)
    assert window.label_flip_rate() == pytest.approx(1 / 100)  # 0.49 -> 0.50 crosses 0.5
    assert window.rank_agreement() == pytest.approx(1.0)
    psi = window.output_psi()
    assert psi is not None and psi < 0.05
    shuffled = ShadowWindow()
    for i in range(100):
        shuffled.add(
            f'{{"predictions":[{i / 100}]}}'.encode(),
            f'{{"predictions":[{(i * 37 % 100) / 500}]}}'.encode(),
            0,
        )
    assert shuffled.output_psi() > 1 and abs(shuffled.rank_agreement() or 0) < 0.5  # type: ignore[operator]


def window_with(stage: Stage, *, candidate_failed: int, answers: int) -> StageWindow:
    window = StageWindow("ckpt4", "1", 1)
    for i in range(answers):
        window.observe("1", 0.01, False)
        window.observe("ckpt4", 0.01, i < candidate_failed)
    return window


def test_a_stage_passes_when_complete_and_fails_early_on_a_broken_gate() -> None:
    p = policy(min_requests=5)
    canary = p.stages[1]
    waiting = judge(p, canary, window_with(canary, candidate_failed=0, answers=4))
    assert waiting.decision == "wait" and "4 candidate answers of 10" in waiting.evidence
    passed = judge(p, canary, window_with(canary, candidate_failed=0, answers=10))
    assert passed.decision == "pass" and "error_rate 0 (≤ 0.01)" in passed.evidence
    failed = judge(p, canary, window_with(canary, candidate_failed=3, answers=6))
    assert failed.decision == "fail" and failed.evidence.startswith(
        "error_rate 0.5 (≤ 0.01) over 6 candidate"
    )
    shadow = p.stages[0]
    unpaired = StageWindow("ckpt4", "1", 0, started=time.monotonic())
    for _ in range(10):
        unpaired.observe("1", 0.01, False)
        unpaired.shadow.add(b"arrow", b"arrow", 0.01)
    verdict = judge(p, shadow, unpaired)
    assert verdict.decision == "fail" and "output_psi could not be measured" in verdict.evidence


def test_input_drift_is_read_from_a_replica_monitor() -> None:
    document = {
        "functions": {
            "recs": {
                "versions": {
                    "4": {
                        "features": [
                            {"name": "price", "role": "input", "psi": 0.31},
                            {"name": "country", "role": "input", "psi": 0.02},
                            {"name": "score", "role": "output", "psi": 0.9},
                        ]
                    }
                }
            }
        }
    }
    assert max_input_psi(document, "recs") == 0.31
    assert max_input_psi({"functions": {}}, "recs") is None


def test_output_psi_is_not_fooled_by_rounding_of_a_single_value() -> None:
    """The same request asked again and again: stable answers one value; a float16 variant answers
    it a hair lower, which is no shift; a variant answering something else is."""
    rounded, shifted = ShadowWindow(), ShadowWindow()
    for _ in range(50):
        rounded.add(b'{"predictions":[0.17799]}', b'{"predictions":[0.17797]}', 0.001)
        shifted.add(b'{"predictions":[0.17799]}', b'{"predictions":[0.35]}', 0.001)
    assert (rounded.output_psi() or 0) < 0.01
    assert (shifted.output_psi() or 0) > 5

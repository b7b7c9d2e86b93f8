"""A rollout policy (``[rollout]`` of ``function.toml``) and the state of one rollout, as data.

When a new version appears for a deployed function that has a policy — a checkpoint published by
a retraining or by ``fn optimize``, or a new image deployed as a new version — it becomes the
*candidate*: it takes no traffic of its own until its stages pass. A stage is either ``shadow``
(a share of live requests is copied to the candidate, its answers compared with stable's and
never returned) or a canary weight (the candidate answers that share of traffic). At every stage
the gates are judged over the stage's window (:mod:`fnserve.gateway.analysis`): all pass, the next
stage; one fails, the candidate is rolled back at once, with the gate and its numbers as the
reason. Reaching weight 100 promotes it.

    [rollout]
    shadow_fraction = 0.1                 # share of live requests copied during a shadow stage (default)
    stages = [
      { shadow = true, requests = 200 },  # at least 200 paired answers, then judged
      { weight = 10, requests = 200 },    # the candidate's own answers, then judged
      { weight = 50, requests = 200 },
      { weight = 100 },                   # promoted
    ]
    [rollout.gates]                       # the limits; see GATES for what each measures
    error_rate = 0.01
    p99_latency_ratio = 2.0
    mean_abs_diff = 0.1

>>> policy = RolloutPolicy.from_table({"stages": [{"shadow": True, "requests": 50}, {"weight": 100}]},
...                                   where="[rollout]")
>>> [s.describe() for s in policy.stages]
['shadow for 50 requests', 'weight 100']
>>> try:
...     RolloutPolicy.from_table({"gates": {"accuracy": 0.9}}, where="[rollout]")
... except ConfigError as exc:
...     print(exc.message[:50])
[rollout] gates: no metric 'accuracy'; known: erro
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fnserve.runtime.errors import ConfigError

SECTION = "rollout"
EVENTS_KEPT = 50  # decisions a deployment's state keeps (the newest); metrics count them all


@dataclass(frozen=True)
class Gate:
    """One measured quantity of the candidate, and which way is good."""

    bound: str  # "max": pass while the value is at most the limit; "min": at least
    stages: str  # "shadow", "canary" or "any": where it can be measured
    default: float | None  # the limit when the policy names none (None: not judged unless named)
    means: str


GATES: dict[str, Gate] = {
    "error_rate": Gate(
        "max", "any", 0.01, "the candidate's share of failed answers (5xx, unreachable) minus stable's"
    ),
    "p99_latency_ratio": Gate("max", "any", 2.0, "the candidate's p99 latency over stable's"),
    "mean_abs_diff": Gate(
        "max", "shadow", None, "mean absolute difference of paired numeric outputs (shadow only)"
    ),
    "label_flip_rate": Gate(
        "max", "shadow", None, "share of paired probabilities on opposite sides of 0.5 (shadow only)"
    ),
    "rank_agreement": Gate(
        "min", "shadow", None, "Spearman rank correlation of paired numeric outputs (shadow only)"
    ),
    "output_psi": Gate(
        "max", "shadow", 0.25, "PSI of the candidate's outputs against stable's on the same requests"
    ),
    "input_drift": Gate(
        "max", "any", None, "the largest input-feature PSI of the candidate's monitor against its reference"
    ),
}


@dataclass(frozen=True)
class Stage:
    """``shadow`` (weight 0, requests copied) or a canary ``weight``; judged after ``requests``
    observations of the candidate and ``min_seconds``, failed early once ``min_requests`` show a
    gate broken."""

    shadow: bool = False
    weight: int = 0
    requests: int = 100  # candidate observations (paired answers, or its own answers) before judging
    min_seconds: float = 0.0

    def describe(self) -> str:
        if self.shadow:
            return f"shadow for {self.requests} requests"
        return f"weight {self.weight}" + (f" for {self.requests} requests" if self.weight < 100 else "")

    def to_dict(self) -> dict[str, Any]:
        kind: dict[str, Any] = {"shadow": True} if self.shadow else {"weight": self.weight}
        return {**kind, "requests": self.requests, "min_seconds": self.min_seconds}


DEFAULT_STAGES = (
    Stage(shadow=True, requests=200),
    Stage(weight=10, requests=200),
    Stage(weight=50, requests=200),
    Stage(weight=100),
)


@dataclass(frozen=True)
class RolloutPolicy:
    stages: tuple[Stage, ...] = DEFAULT_STAGES
    gates: Mapping[str, float] = field(default_factory=lambda: _gates(None, DEFAULT_STAGES, ""))
    shadow_fraction: float = 0.1  # share of live requests copied to the candidate in shadow stages
    min_requests: int = 50  # observations before a gate can fail a stage early
    shadow_timeout_s: float = 5.0  # a shadow answer slower than this counts as failed
    ready_timeout_s: float = 300.0  # a candidate with no ready replica this long into a stage fails it

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, where: str) -> RolloutPolicy:
        """Parse ``[rollout]``; a ConfigError names the key and what was expected."""
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table")
        known = {"stages", "gates", "shadow_fraction", "min_requests", "shadow_timeout_s", "ready_timeout_s"}
        for key in table:
            if key not in known:
                raise ConfigError(f"{where} has unknown key {key!r}; known: {', '.join(sorted(known))}")
        stages = _stages(table["stages"], where) if "stages" in table else DEFAULT_STAGES
        gates = _gates(table.get("gates"), stages, where)
        fraction = _number(table, "shadow_fraction", 0.1, where)
        if not 0 < fraction <= 1:
            raise ConfigError(f"{where} shadow_fraction must be in (0, 1], got {fraction}")
        min_requests = _integer(table, "min_requests", 50, where)
        timeout = _number(table, "shadow_timeout_s", 5.0, where)
        if timeout <= 0:
            raise ConfigError(f"{where} shadow_timeout_s must be positive, got {timeout}")
        ready = _number(table, "ready_timeout_s", 300.0, where)
        if ready <= 0:
            raise ConfigError(f"{where} ready_timeout_s must be positive, got {ready}")
        return cls(stages, gates, fraction, min_requests, timeout, ready)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [s.to_dict() for s in self.stages],
            "gates": {name: self.gates.get(name, False) for name in GATES},  # false: not judged
            "shadow_fraction": self.shadow_fraction,
            "min_requests": self.min_requests,
            "shadow_timeout_s": self.shadow_timeout_s,
            "ready_timeout_s": self.ready_timeout_s,
        }

    @classmethod
    def from_dict(cls, data: Any) -> RolloutPolicy:
        """The JSON form (deployment state, the admin API): checked as ``[rollout]`` is."""
        return cls.from_table(data, where="rollout policy")


def _stages(value: Any, where: str) -> tuple[Stage, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise ConfigError(f"{where} stages must be a non-empty list of tables, e.g. [{{ weight = 100 }}]")
    stages = []
    for i, item in enumerate(value):
        at = f"{where} stages[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{at} must be a table like {{ weight = 10, requests = 200 }}")
        unknown = set(item) - {"shadow", "weight", "requests", "min_seconds"}
        if unknown:
            raise ConfigError(
                f"{at} has unknown key {sorted(unknown)[0]!r}; known: min_seconds, requests, shadow, weight"
            )
        shadow = item.get("shadow", False)
        if not isinstance(shadow, bool):
            raise ConfigError(f"{at} shadow must be true or false, got {shadow!r}")
        weight = _integer(item, "weight", 0, at)
        if shadow and "weight" in item:
            raise ConfigError(f"{at}: a shadow stage has no weight (the candidate answers nobody)")
        if not shadow and not 1 <= weight <= 100:
            raise ConfigError(f"{at} weight must be an integer 1-100 (or shadow = true), got {weight}")
        requests = _integer(item, "requests", 100, at)
        if requests < 1:
            raise ConfigError(f"{at} requests must be at least 1, got {requests}")
        stages.append(Stage(shadow, weight, requests, _number(item, "min_seconds", 0.0, at)))
    weights = [s.weight for s in stages if not s.shadow]
    if weights != sorted(weights):
        raise ConfigError(f"{where} stages: canary weights must not decrease, got {weights}")
    if stages[-1].shadow or stages[-1].weight != 100:
        raise ConfigError(f"{where} stages: the last stage must be {{ weight = 100 }} (the promotion)")
    return tuple(stages)


def _gates(value: Any, stages: Sequence[Stage], where: str) -> dict[str, float]:
    shadowed = any(s.shadow for s in stages)
    gates = {
        k: g.default
        for k, g in GATES.items()
        if g.default is not None and (shadowed or g.stages != "shadow")  # what the stages can measure
    }
    if value is None:
        return gates
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} gates must be a table of metric = limit")
    for name, limit in value.items():
        gate = GATES.get(name)
        if gate is None:
            raise ConfigError(f"{where} gates: no metric {name!r}; known: {', '.join(sorted(GATES))}")
        if limit is False:  # `error_rate = false`: not judged
            gates.pop(name, None)
            continue
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not math.isfinite(limit):
            raise ConfigError(f"{where} gates.{name} must be a number (or false: not judged), got {limit!r}")
        if gate.stages == "shadow" and not shadowed:
            raise ConfigError(
                f"{where} gates.{name} is measured in shadow stages only, and the policy has none"
            )
        gates[name] = float(limit)
    return gates


def _number(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{where} {key} must be a number, got {value!r}")
    return float(value)


def _integer(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where} {key} must be an integer, got {value!r}")
    return value


# --- one rollout's state ---------------------------------------------------------------------

ACTIVE = "active"
PROMOTED = "promoted"
ROLLED_BACK = "rolled back"


@dataclass(frozen=True)
class Rollout:
    """A candidate's progress: saved with the deployment, so a restarted gateway resumes it."""

    candidate: str  # the deployment version label under trial
    stable: str  # the label answering for it meanwhile
    stage: int = 0  # index into the policy's stages
    stage_started: float = 0.0  # wall-clock seconds (time.time()): survives a restart
    status: str = ACTIVE  # active, promoted, rolled back
    paused: bool = False  # by hand: no automatic step while set
    reason: str = ""  # why it ended (the failing gate and its numbers, or "promoted")
    checkpoint: int | None = None  # the checkpoint version it tries, when it came from the store

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Rollout:
        if not isinstance(data, Mapping):
            raise ValueError("a rollout is an object")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"rollout: {exc}") from None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


def event(at: float, kind: str, message: str, **details: Any) -> dict[str, Any]:
    """One entry of a deployment's decision log (JSON)."""
    return {"at": round(at, 3), "kind": kind, "message": message, **details}

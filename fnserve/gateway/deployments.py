"""Changes to a function's deployment state, as pure functions: deploy, scale, split, promote, rollback.

The admin API and the CLI's no-gateway path both go through these, so a change means the same
thing whichever way it is made. Each returns a new :class:`FunctionDeployment` or raises a
:class:`DeployError` with the HTTP status the admin API answers.

>>> d = deploy(None, "recs", image="functions/recs")
>>> d = deploy(d, "recs", version="2", image="functions/recs", checkpoint_version="7", weight=10)
>>> d.weights()
{'1': 90, '2': 10}
>>> promote(d, "2").weights(), rollback(promote(d, "2")).weights()
({'1': 0, '2': 100}, {'1': 90, '2': 10})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fnserve.gateway.platform import VERSION_RE, FunctionDeployment, Scaling, VersionDeployment
from fnserve.gateway.rollout import EVENTS_KEPT, PROMOTED, ROLLED_BACK, Rollout, RolloutPolicy, Stage, event
from fnserve.gateway.split import SplitError, check_weights, rebalance
from fnserve.project import check_name as check_project_name
from fnserve.runtime.errors import ConfigError, FnError


class DeployError(FnError):
    """A change that cannot be made; ``status`` is what the admin API answers (4xx)."""

    status = 422


class NotDeployed(DeployError):
    status = 404


def check_name(name: str) -> str:
    """The project's one name rule (what the runtime serves), as the admin API's 422."""
    try:
        return check_project_name("function name", name)
    except ValueError as exc:
        raise DeployError(str(exc)) from None


def deploy(
    current: FunctionDeployment | None,
    name: str,
    *,
    version: str | None = None,
    image: str | None = None,
    checkpoint_version: str | None = None,
    weight: int | None = None,
    scaling: Mapping[str, Any] | None = None,
    sticky_key: str | None = None,
    policy: Mapping[str, Any] | bool | None = None,
) -> FunctionDeployment:
    """Create the function, add a version, or update one.

    ``policy``: a rollout policy (``[rollout]`` as a mapping) to set, ``False`` to remove it,
    None to keep the current one.

    A new function starts with version ``1`` (or ``version``) at weight 100. A new version of an
    existing function gets ``weight`` (default 0: deployed dark, reachable only at ``name@version``)
    and the others share the rest in proportion. Without ``version``, the function's only version
    is updated.
    """
    check_name(name)
    if current is None:
        if image is None:
            raise DeployError(f"{name}: a new function needs an image (or, locally, a function folder)")
        label = version or "1"
        versions: dict[str, VersionDeployment] = {}
        weights = {label: 100}
    else:
        versions = dict(current.versions)
        if version is None:
            if len(versions) > 1:
                raise DeployError(f"{name} has versions {sorted(versions)}: name the one to change")
            version = next(iter(versions))
        label = version
        weights = current.weights()
        if label not in versions:
            if image is None:
                raise DeployError(f"{name}: the new version {label!r} needs an image")
            weights = _rebalanced(weights, label, weight or 0)
        elif weight is not None:
            weights = _rebalanced(weights, label, weight)
    if not VERSION_RE.match(label):
        raise DeployError(f"version label {label!r}: use letters, digits, '.', '_' or '-' (at most 40)")
    old = versions.get(label)
    versions[label] = VersionDeployment(
        image=image if image is not None else old.image,  # type: ignore[union-attr]
        weight=weights[label],
        checkpoint_version=checkpoint_version or (old.checkpoint_version if old else "latest"),
    )
    if checkpoint_version is not None and checkpoint_version != "latest" and not checkpoint_version.isdigit():
        raise DeployError(f"checkpoint version {checkpoint_version!r}: a number or 'latest'")
    versions = {k: dataclasses.replace(v, weight=weights[k]) for k, v in versions.items()}
    if current is None:
        changed = FunctionDeployment(name=name, versions=versions, sticky_key=sticky_key or None)
    else:
        changed = dataclasses.replace(
            current,
            versions=versions,
            sticky_key=current.sticky_key if sticky_key is None else (sticky_key or None),
            previous_weights=current.weights() if current.weights() != weights else current.previous_weights,
        )
    if policy is not None:
        changed = dataclasses.replace(changed, policy=_policy(name, policy))
    return scale(changed, **(scaling or {}))


def _policy(name: str, given: Mapping[str, Any] | bool) -> RolloutPolicy | None:
    if given is False:
        return None
    if given is True or not isinstance(given, Mapping):
        raise DeployError(f"{name}: policy must be a rollout policy object, or false to remove it")
    try:
        return RolloutPolicy.from_table(given, where=f"{name}: rollout policy")
    except ConfigError as exc:
        raise DeployError(exc.message) from None


def scale(deployment: FunctionDeployment, **changes: Any) -> FunctionDeployment:
    """New scaling bounds, e.g. ``scale(d, min_replicas=0, max_replicas=8)``; others kept."""
    given = {k: v for k, v in changes.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(Scaling)}
    if unknown:
        raise DeployError(f"unknown scaling setting(s): {sorted(unknown)}")
    try:
        scaling = dataclasses.replace(deployment.scaling, **given)
    except (ValueError, TypeError) as exc:
        raise DeployError(f"{deployment.name}: {exc}") from None
    return dataclasses.replace(deployment, scaling=scaling)


def split(deployment: FunctionDeployment, weights: Mapping[str, int]) -> FunctionDeployment:
    """Set every version's weight (versions not named get 0); remembers the split for rollback."""
    unknown = set(weights) - set(deployment.versions)
    if unknown:
        raise DeployError(
            f"{deployment.name} has no version {sorted(unknown)[0]!r}; it has {sorted(deployment.versions)}"
        )
    full = {label: weights.get(label, 0) for label in deployment.versions}
    try:
        check_weights(full)
    except SplitError as exc:
        raise DeployError(str(exc)) from None
    if full == deployment.weights():
        return deployment
    versions = {k: dataclasses.replace(v, weight=full[k]) for k, v in deployment.versions.items()}
    return dataclasses.replace(deployment, versions=versions, previous_weights=deployment.weights())


def promote(deployment: FunctionDeployment, version: str) -> FunctionDeployment:
    """All traffic to ``version``."""
    return split(deployment, {version: 100})


def promote_by_hand(deployment: FunctionDeployment, version: str, now: float) -> FunctionDeployment:
    """``fn promote`` — during a rollout too: promoting its candidate ends it as promoted,
    promoting any other version ends it as rolled back (the candidate removed)."""
    rollout = deployment.rollout
    if rollout is None or not rollout.active:
        return promote(deployment, version)
    if version != rollout.candidate:
        return promote(
            fail_rollout(deployment, now, f"version {version} promoted by hand", by_hand=True), version
        )
    done = replace(rollout, status=PROMOTED, reason="promoted by hand", paused=False)
    changed = replace(promote(deployment, version), rollout=done)
    return _logged(changed, now, "promoted", f"version {version} promoted to 100% by hand", candidate=version)


def rollback_by_hand(deployment: FunctionDeployment, now: float) -> FunctionDeployment:
    """``fn rollback`` — during a rollout, its candidate goes (by hand); else the split before."""
    if deployment.rollout is not None and deployment.rollout.active:
        return fail_rollout(deployment, now, "by hand", by_hand=True)
    return rollback(deployment)


def change_rollout(
    deployment: FunctionDeployment, change: Mapping[str, Any], now: float
) -> FunctionDeployment:
    """``fn rollout``: ``{"paused": true|false}`` pauses or resumes it, ``{"candidate": "V"}``
    starts one for a deployed version."""
    if set(change) == {"paused"} and isinstance(change["paused"], bool):
        return pause_rollout(deployment, now, change["paused"])
    if set(change) == {"candidate"} and isinstance(change["candidate"], str):
        candidate = change["candidate"]
        return start_rollout(deployment, candidate, now, why=f"version {candidate} named by hand")
    raise DeployError('expected {"paused": true|false} or {"candidate": "VERSION"}')


def rollback(deployment: FunctionDeployment) -> FunctionDeployment:
    """Back to the split before the last change (a second rollback undoes the first)."""
    previous = deployment.previous_weights
    if not previous:
        raise DeployError(f"{deployment.name} has no earlier split to roll back to", status=409)
    return split(deployment, {k: w for k, w in previous.items() if k in deployment.versions})


def _rebalanced(weights: dict[str, int], label: str, weight: int) -> dict[str, int]:
    try:
        return rebalance(weights, label, weight)
    except SplitError as exc:
        raise DeployError(str(exc)) from None


# --- rollouts: a candidate's stages (the decisions are fnserve.gateway.release's) -------------


def start_rollout(
    deployment: FunctionDeployment, candidate: str, now: float, *, checkpoint: int | None = None, why: str
) -> FunctionDeployment:
    """Make ``candidate`` (a deployed version) the candidate of the policy's first stage; the
    version with the most weight stays stable and answers the rest."""
    policy = deployment.policy
    if policy is None:
        raise DeployError(f"{deployment.name} has no rollout policy ([rollout] in its function.toml)")
    if deployment.rollout is not None and deployment.rollout.active:
        raise DeployError(
            f"{deployment.name} is already rolling out version {deployment.rollout.candidate!r}", status=409
        )
    if candidate not in deployment.versions:
        raise DeployError(f"{deployment.name} has no version {candidate!r}")
    stable = deployment.heaviest(excluding=candidate)
    if stable is None:
        raise DeployError(f"{deployment.name}: a candidate needs a stable version beside it")
    rollout = Rollout(candidate=candidate, stable=stable, stage_started=now, checkpoint=checkpoint)
    changed = _at_stage(deployment, rollout, policy.stages[0])
    return _logged(
        changed,
        now,
        "started",
        f"version {candidate} is the candidate ({why}); version {stable} stays stable; "
        f"first stage: {policy.stages[0].describe()}",
        candidate=candidate,
        stable=stable,
    )


def advance_rollout(deployment: FunctionDeployment, now: float, evidence: str) -> FunctionDeployment:
    """The current stage passed: on to the next one, or promoted at the last."""
    rollout, policy = _active(deployment)
    stage = rollout.stage + 1
    if stage >= len(policy.stages) - 1:  # the last stage is weight 100: the promotion itself
        done = replace(
            rollout, stage=len(policy.stages) - 1, stage_started=now, status=PROMOTED, reason=evidence
        )
        changed = _at_stage(deployment, done, policy.stages[-1])
        message = f"version {rollout.candidate} promoted to 100%: {evidence}"
        return _logged(changed, now, "promoted", message, candidate=rollout.candidate)
    moved = replace(rollout, stage=stage, stage_started=now)
    changed = _at_stage(deployment, moved, policy.stages[stage])
    message = f"stage {rollout.stage + 1} passed ({evidence}); now {policy.stages[stage].describe()}"
    return _logged(changed, now, "advanced", message, candidate=rollout.candidate, stage=stage)


def fail_rollout(
    deployment: FunctionDeployment, now: float, reason: str, *, by_hand: bool = False
) -> FunctionDeployment:
    """Back to the stable version at once; the candidate is removed and its checkpoint not retried."""
    rollout, _ = _active(deployment)
    versions = {k: v for k, v in deployment.versions.items() if k != rollout.candidate}
    weights = {k: (100 if k == rollout.stable else 0) for k in versions}
    versions = {k: replace(v, weight=weights[k]) for k, v in versions.items()}
    rejected = deployment.rejected
    if rollout.checkpoint is not None and rollout.checkpoint not in rejected:
        rejected = (*rejected, rollout.checkpoint)
    changed = replace(
        deployment,
        versions=versions,
        previous_weights=None,
        rollout=replace(rollout, status=ROLLED_BACK, reason=reason),
        rejected=rejected,
    )
    who = "rolled back by hand" if by_hand else "rolled back"
    message = f"version {rollout.candidate} {who} at stage {rollout.stage + 1}: {reason}"
    return _logged(changed, now, "rolled back", message, candidate=rollout.candidate, stage=rollout.stage)


def pause_rollout(deployment: FunctionDeployment, now: float, paused: bool) -> FunctionDeployment:
    rollout, _ = _active(deployment)
    if rollout.paused == paused:
        return deployment
    if paused:
        changed = replace(deployment, rollout=replace(rollout, paused=True))
        return _logged(changed, now, "paused", f"rollout of version {rollout.candidate} paused by hand")
    # resumed: the stage's window starts again (what happened while paused is not judged)
    changed = replace(deployment, rollout=replace(rollout, paused=False, stage_started=now))
    return _logged(changed, now, "resumed", f"rollout of version {rollout.candidate} resumed by hand")


def _active(deployment: FunctionDeployment) -> tuple[Rollout, RolloutPolicy]:
    rollout, policy = deployment.rollout, deployment.policy
    if rollout is None or not rollout.active or policy is None:
        raise DeployError(f"{deployment.name} has no rollout in progress", status=409)
    return rollout, policy


def _at_stage(deployment: FunctionDeployment, rollout: Rollout, stage: Stage) -> FunctionDeployment:
    """Weights for ``stage``: the candidate's share, the stable version the rest, others none."""
    share = 0 if stage.shadow else stage.weight
    weights = {k: 0 for k in deployment.versions}
    weights[rollout.candidate] = share
    if share < 100:
        weights[rollout.stable] = 100 - share
    changed = split(deployment, weights) if weights != deployment.weights() else deployment
    return replace(changed, rollout=rollout)


def _logged(
    deployment: FunctionDeployment, now: float, kind: str, message: str, **details: Any
) -> FunctionDeployment:
    events = (*deployment.events, event(now, kind, message, **details))[-EVENTS_KEPT:]
    return replace(deployment, events=events)

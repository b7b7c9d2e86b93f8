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
from typing import Any

from fnserve.gateway.platform import VERSION_RE, FunctionDeployment, Scaling, VersionDeployment
from fnserve.gateway.split import SplitError, check_weights, rebalance
from fnserve.project import check_name as check_project_name
from fnserve.runtime.errors import FnError


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
) -> FunctionDeployment:
    """Create the function, add a version, or update one.

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
    return scale(changed, **(scaling or {}))


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

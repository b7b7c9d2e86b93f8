"""What `fn deploy/status/scale/split/promote/rollback/logs/delete` act through.

With a gateway running (``[gateway] url``, default http://127.0.0.1:8080), every change goes
through its admin API, so it takes effect for the next request. Without one, changes are saved
straight through the target's platform, and the next ``fn gateway`` routes by them — the same
pure functions (:mod:`fnserve.gateway.deployments`) make the change either way.

    control = connect(settings, target="local")
    control.deploy("recs", image="functions/recs", scaling={"min_replicas": 0})
    control.split("recs", {"1": 90, "2": 10})
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import httpx

from fnserve.gateway import deployments
from fnserve.gateway.platform import FunctionDeployment, Platform, PlatformError
from fnserve.gateway.server import admin_token, gateway_url
from fnserve.gateway.targets import platform_for
from fnserve.project import ProjectSettings
from fnserve.runtime.errors import FnError


class ControlError(FnError):
    """A change or query that failed; the message is for the user."""

    status = 400


class Control(Protocol):
    target: str
    via: str  # where changes go, for messages

    def status(self) -> dict[str, Any]: ...
    def deploy(self, name: str, **args: Any) -> dict[str, Any]: ...
    def scale(self, name: str, **changes: Any) -> dict[str, Any]: ...
    def split(self, name: str, weights: dict[str, int]) -> dict[str, Any]: ...
    def promote(self, name: str, version: str) -> dict[str, Any]: ...
    def rollback(self, name: str) -> dict[str, Any]: ...
    def rollout(self, name: str, change: dict[str, Any]) -> dict[str, Any]: ...
    def delete(self, name: str) -> None: ...
    def logs(self, name: str, tail: int) -> list[str]: ...


def running_target(settings: ProjectSettings) -> str | None:
    """The target of the gateway answering at ``[gateway] url``, or None when none answers."""
    url, (token, _) = gateway_url(settings), admin_token(settings)
    try:
        response = httpx.get(f"{url}/admin/status", headers={"Authorization": f"Bearer {token}"}, timeout=3)
    except httpx.TransportError:
        return None
    target = _json(response).get("target") if response.status_code == 200 else None
    return target if isinstance(target, str) else None


def connect(settings: ProjectSettings, target: str | None = None) -> Control:
    """The running gateway's admin API if one answers, else the target's platform directly."""
    url, (token, _) = gateway_url(settings), admin_token(settings)
    try:
        response = httpx.get(f"{url}/admin/status", headers={"Authorization": f"Bearer {token}"}, timeout=3)
    except httpx.TransportError:
        try:
            return DirectControl(platform_for(target or settings.gateway_target, settings))
        except PlatformError as exc:
            raise ControlError(str(exc)) from None
    if response.status_code == 401:
        raise ControlError(
            f"the gateway at {url} refused the admin token; "
            "set FNSERVE_GATEWAY_TOKEN (or [gateway] token) to its token"
        )
    if response.status_code != 200 or "target" not in _json(response):
        raise ControlError(f"{url} answers but is not an fnserve gateway (is `fn serve` running there?)")
    running = _json(response)["target"]
    if target is not None and target != running:
        raise ControlError(
            f"the gateway at {url} runs target {running!r}, not {target!r}; stop it or drop --target"
        )
    return AdminClient(url, token, running)


class AdminClient:
    def __init__(self, url: str, token: str, target: str):
        self.target, self.via = target, f"the gateway at {url}"
        self.url, self.headers = url, {"Authorization": f"Bearer {token}"}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        try:
            with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as http:
                response = http.request(method, path, json=body, params=params or None)
        except httpx.TransportError as exc:
            raise ControlError(f"cannot reach {self.via}: {exc}") from None
        data = _json(response)
        if response.status_code >= 400:
            raise ControlError(str(data.get("error", response.text)), status=response.status_code)
        return data

    def status(self) -> dict[str, Any]:
        return dict(self._call("GET", "/admin/status"))

    def deploy(self, name: str, **args: Any) -> dict[str, Any]:
        return dict(self._call("PUT", f"/admin/functions/{name}", args))

    def scale(self, name: str, **changes: Any) -> dict[str, Any]:
        return dict(self._call("POST", f"/admin/functions/{name}/scale", changes))

    def split(self, name: str, weights: dict[str, int]) -> dict[str, Any]:
        return dict(self._call("POST", f"/admin/functions/{name}/split", {"weights": weights}))

    def promote(self, name: str, version: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/admin/functions/{name}/promote", {"version": version}))

    def rollback(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/admin/functions/{name}/rollback"))

    def rollout(self, name: str, change: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"/admin/functions/{name}/rollout", change))

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/admin/functions/{name}")

    def logs(self, name: str, tail: int) -> list[str]:
        return list(self._call("GET", f"/admin/functions/{name}/logs", tail=tail)["lines"])


class DirectControl:
    """No gateway running: read and save the state through the platform."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self.target = str(getattr(platform, "target", type(platform).__name__))
        self.via = f"the {self.target} target's saved state (no gateway running: `fn gateway` serves it)"

    def _get(self, name: str) -> FunctionDeployment:
        found = self._state().get(name)
        if found is None:
            raise ControlError(f"no function named {name!r} is deployed; see `fn status`", status=404)
        return found

    def _state(self) -> dict[str, FunctionDeployment]:
        try:
            return self.platform.load_state()
        except PlatformError as exc:
            raise ControlError(str(exc)) from None

    def _save(self, deployment: FunctionDeployment) -> dict[str, Any]:
        try:
            self.platform.save_state(deployment)
        except PlatformError as exc:
            raise ControlError(str(exc)) from None
        return self._describe(deployment)

    def _describe(self, d: FunctionDeployment) -> dict[str, Any]:
        versions = [
            {"version": label, **v.__dict__, "desired": self.platform.desired(d.name, label), "ready": None}
            for label, v in d.versions.items()
        ]
        return {**d.to_dict(), "versions": versions}

    def status(self) -> dict[str, Any]:
        functions = [self._describe(d) for _, d in sorted(self._state().items())]
        return {"target": self.target, "functions": functions}

    def deploy(self, name: str, **args: Any) -> dict[str, Any]:
        return self._save(deployments.deploy(self._state().get(name), name, **args))

    def scale(self, name: str, **changes: Any) -> dict[str, Any]:
        return self._save(deployments.scale(self._get(name), **changes))

    def split(self, name: str, weights: dict[str, int]) -> dict[str, Any]:
        return self._save(deployments.split(self._get(name), weights))

    def promote(self, name: str, version: str) -> dict[str, Any]:
        return self._save(deployments.promote_by_hand(self._get(name), version, time.time()))

    def rollback(self, name: str) -> dict[str, Any]:
        return self._save(deployments.rollback_by_hand(self._get(name), time.time()))

    def rollout(self, name: str, change: dict[str, Any]) -> dict[str, Any]:
        return self._save(deployments.change_rollout(self._get(name), change, time.time()))

    def delete(self, name: str) -> None:
        self._get(name)
        self.platform.delete(name)

    def logs(self, name: str, tail: int) -> list[str]:
        return self.platform.logs(self._get(name).name, tail=tail)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

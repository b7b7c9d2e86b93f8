"""The admin API: deployment state, scale, split, promote, rollback, status, logs — behind a token.

Every route needs ``Authorization: Bearer <token>`` (401 otherwise). Changes take effect for
the next request and are saved through the platform, so a restarted gateway routes the same.

| method and path | body | does |
| --- | --- | --- |
| ``GET /admin/status`` | | every function: versions, weights, replicas, rate, p99, cold start, training |
| ``GET /admin/functions/{name}`` | | one function's status |
| ``PUT /admin/functions/{name}`` | ``{"version", "image", "checkpoint_version", "weight", ...}`` | deploy |
| ``POST /admin/functions/{name}/scale`` | ``{"min_replicas": 0, "max_replicas": 4, ...}`` | scaling bounds |
| ``POST /admin/functions/{name}/split`` | ``{"weights": {"3": 90, "4": 10}}`` | traffic split |
| ``POST /admin/functions/{name}/promote`` | ``{"version": "4"}`` | all traffic to one version |
| ``POST /admin/functions/{name}/rollback`` | | the split before the last change |
| ``DELETE /admin/functions/{name}`` | | remove replicas and state |
| ``GET /admin/functions/{name}/logs?tail=100`` | | recent log lines |
| ``POST /admin/functions/{name}/rollout`` | ``{"paused": true}``, ``{"candidate": "4"}`` | (un)pause, start |

A deploy body may also carry ``"policy"`` (``[rollout]`` as JSON; ``false`` removes it): with a
policy, a new version deployed becomes a rollout's candidate instead of taking its weight, and
``promote``/``rollback`` during a rollout end it by hand.

A deploy body may also carry ``"scaling": {...}`` (as for scale) and ``"sticky_key"``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve.gateway import deployments
from fnserve.gateway.platform import FunctionDeployment
from fnserve.gateway.proxy import Unauthorized
from fnserve.gateway.routing import FunctionRoute
from fnserve.gateway.service import Gateway
from fnserve.runtime.errors import BadRequest, FnError, ValidationError
from fnserve.runtime.http import error_response, json_response, parse_json, read_body
from fnserve.runtime.redact import scrub

ADMIN_BODY_BYTES = 1024 * 1024
DEPLOY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "version": str,
    "image": str,
    "checkpoint_version": (str, int),
    "weight": int,
    "scaling": dict,
    "sticky_key": str,
    "policy": (dict, bool),
}
Handler = Callable[[Request], Awaitable[Response]]


def function_status(gateway: Gateway, route: FunctionRoute) -> dict[str, Any]:
    deployment = route.deployment
    versions = []
    standbys = getattr(gateway.platform, "standbys", None)  # the warm pool, where a target has one
    pool = standbys(route.name) if callable(standbys) else {}
    for label, spec in deployment.versions.items():
        version = route.versions[label]
        versions.append(
            {
                "version": label,
                "weight": spec.weight,
                "image": spec.image,
                "checkpoint_version": spec.checkpoint_version,
                "desired": version.desired,
                "ready": version.balancer.ready,
                "in_flight": version.meter.in_flight,
                "standby": pool.get(label, 0),  # warm-pool standbys ready to be claimed
                "replicas": [
                    {"url": r.url, "ready": r.ready, "draining": r.draining, "id": r.id}
                    for r in version.replicas
                ],
            }
        )
    rollout = deployment.rollout
    shown_rollout = None
    if rollout is not None and deployment.policy is not None:
        stage = deployment.policy.stages[rollout.stage]
        trial = route.stats.trial
        shown_rollout = {
            **rollout.to_dict(),
            "stage_number": rollout.stage + 1,
            "stages": len(deployment.policy.stages),
            "stage_describe": stage.describe(),
            "window": trial.summary(stage) if trial is not None and rollout.active else None,
        }
    return {
        "name": route.name,
        "versions": versions,
        "policy": deployment.policy.to_dict() if deployment.policy else None,
        "rollout": shown_rollout,
        "events": [dict(e) for e in deployment.events],
        "scaling": deployment.to_dict()["scaling"],
        "sticky_key": deployment.sticky_key,
        "previous_weights": deployment.to_dict()["previous_weights"],
        "held": route.stats.held,
        **route.stats.recent.summary(),
        "last_cold_start": route.stats.last_cold_start,
        "training": gateway.training.describe(route.name) if gateway.training is not None else None,
    }


def routes(gateway: Gateway) -> list[Route]:
    token = gateway.options.token.encode()

    def admin(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode("latin-1")
            try:
                if not token or not hmac.compare_digest(given, b"Bearer " + token):
                    raise Unauthorized(
                        "the admin API needs 'Authorization: Bearer <token>' (see fn gateway's output)"
                    )
                return await handler(request)
            except FnError as exc:  # PlatformError included: 502, or the 4xx it names
                return error_response(exc)

        return guarded

    def route_of(request: Request) -> FunctionRoute:
        name = request.path_params["name"]
        route = gateway.functions.get(name)
        if route is None:
            raise deployments.NotDeployed(f"no function named {name!r} is deployed; see GET /admin/status")
        return route

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await read_body(request, ADMIN_BODY_BYTES)
        data = parse_json(raw) if raw else {}
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object")
        return data

    async def answer(deployment: FunctionDeployment) -> Response:
        route = await gateway.apply(deployment)
        return json_response(function_status(gateway, route))

    async def status(_: Request) -> Response:
        functions = [function_status(gateway, r) for _, r in sorted(gateway.functions.items())]
        return json_response({"target": gateway.target, "functions": functions})

    async def show(request: Request) -> Response:
        return json_response(function_status(gateway, route_of(request)))

    async def deploy(request: Request) -> Response:
        name = deployments.check_name(request.path_params["name"])
        args = await body_of(request)
        for key, value in args.items():
            kind = DEPLOY_FIELDS.get(key)
            if kind is None:
                raise ValidationError(f"unknown field {key!r}; expected some of {sorted(DEPLOY_FIELDS)}")
            boolean = isinstance(value, bool) and key != "policy"  # policy: false removes it
            if value is not None and (not isinstance(value, kind) or boolean):
                raise ValidationError(
                    f"{key}: expected {getattr(kind, '__name__', 'a string')}, got {value!r}"
                )
        if isinstance(args.get("checkpoint_version"), int):
            args["checkpoint_version"] = str(args["checkpoint_version"])
        current = gateway.functions.get(name)
        changed = deployments.deploy(current.deployment if current else None, name, **args)
        added = args.get("version")
        if (
            changed.policy is not None
            and current is not None
            and added is not None
            and added not in current.deployment.versions
        ):  # a new version of a function with a policy: a candidate, not a share of traffic yet
            why = f"version {added} was deployed"
            return await answer(deployments.start_rollout(changed, added, time.time(), why=why))
        return await answer(changed)

    async def scale(request: Request) -> Response:
        return await answer(deployments.scale(route_of(request).deployment, **await body_of(request)))

    async def split(request: Request) -> Response:
        weights = (await body_of(request)).get("weights")
        if not isinstance(weights, dict) or not weights:
            raise ValidationError('expected {"weights": {"VERSION": WEIGHT, ...}}')
        return await answer(deployments.split(route_of(request).deployment, weights))

    async def promote(request: Request) -> Response:
        version = (await body_of(request)).get("version")
        if not isinstance(version, str):
            raise ValidationError('expected {"version": "VERSION"}')
        return await answer(deployments.promote_by_hand(route_of(request).deployment, version, time.time()))

    async def rollback(request: Request) -> Response:
        return await answer(deployments.rollback_by_hand(route_of(request).deployment, time.time()))

    async def rollout(request: Request) -> Response:
        change = await body_of(request)
        return await answer(deployments.change_rollout(route_of(request).deployment, change, time.time()))

    async def delete(request: Request) -> Response:
        route = route_of(request)
        await gateway.remove(route.name)
        return json_response({"deleted": route.name})

    async def logs(request: Request) -> Response:
        tail = request.query_params.get("tail", "100")
        if not tail.isdigit() or not 0 < int(tail) <= 10_000:
            raise ValidationError("tail: expected a number of lines, 1-10000")
        lines = await gateway.call(lambda: gateway.platform.logs(route_of(request).name, tail=int(tail)))
        return json_response({"lines": [scrub(line) for line in lines]})

    one = "/admin/functions/{name}"
    return [
        Route("/admin/status", admin(status)),
        Route(one, admin(show), methods=["GET"]),
        Route(one, admin(deploy), methods=["PUT"]),
        Route(one, admin(delete), methods=["DELETE"]),
        Route(one + "/scale", admin(scale), methods=["POST"]),
        Route(one + "/split", admin(split), methods=["POST"]),
        Route(one + "/promote", admin(promote), methods=["POST"]),
        Route(one + "/rollback", admin(rollback), methods=["POST"]),
        Route(one + "/logs", admin(logs)),
        Route(one + "/rollout", admin(rollout), methods=["POST"]),
    ]

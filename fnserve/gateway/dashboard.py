"""The gateway's ``/dashboard/data``: its own figures per function and version, with the split.

Requests, errors and latency are the gateway's own (what callers saw, held time included); batch
sizes are the replicas' (only they batch), read from each ready replica's ``/dashboard/data`` and
summed per 10 s bucket into the version the replica serves.

What it shows is what the gateway already shows without the admin token (``GET /functions``:
versions, weights, replicas ready and desired) plus aggregate request figures; never what the
token guards (replica addresses, images, scaling, logs): of scheduled training, the schedule and
the last and next run, not a failure's reason nor the data URL. When the prediction routes need the
token (``protect_predictions``), so does this data: the page then asks for the token and sends
it as ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fnserve.gateway.proxy import Unauthorized
from fnserve.gateway.routing import FunctionRoute, VersionRoute
from fnserve.gateway.service import Gateway
from fnserve.gateway.upstream import UpstreamError
from fnserve.runtime.dashboard import Handler
from fnserve.runtime.dashboard.series import BUCKET_S, MINUTE_BUCKETS, by_version
from fnserve.runtime.http import error_response, json_response

REPLICA_TIMEOUT_S = 2.0
Batches = dict[float, tuple[int, int, int]]  # bucket start: (batches, instances, largest)


async def gateway_data(gateway: Gateway, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    functions = []
    for name, route in sorted(gateway.functions.items()):
        versions = []
        for label in sorted(set(route.versions) | gateway.recent.versions(name), key=by_version):
            spec, version = route.deployment.versions.get(label), route.versions.get(label)
            versions.append(
                {
                    "version": label,
                    "serving": spec is not None and spec.weight > 0,
                    "weight": spec.weight if spec is not None else 0,
                    "ready": version.balancer.ready if version is not None else 0,
                    "desired": version.desired if version is not None else 0,
                    **gateway.recent.figures(name, label, now),
                }
            )
        batches = await asyncio.gather(
            *(replica_batches(name, route.versions.get(v["version"])) for v in versions)
        )
        for entry, found in zip(versions, batches, strict=True):
            with_batches(entry, found)
        training = gateway.training.summary(name) if gateway.training is not None else None
        functions.append(
            {"name": name, "versions": versions, "training": training, "rollout": rollout_summary(route)}
        )
    return {"source": f"gateway ({gateway.target})", "bucket_s": BUCKET_S, "now": now, "functions": functions}


def rollout_summary(route: FunctionRoute) -> dict[str, Any] | None:
    """The rollout in progress or last ended: its stage and the last decisions (gates, numbers)."""
    deployment = route.deployment
    rollout, policy = deployment.rollout, deployment.policy
    if rollout is None or policy is None:
        return None
    return {
        "candidate": rollout.candidate,
        "stable": rollout.stable,
        "status": rollout.status,
        "paused": rollout.paused,
        "stage": rollout.stage + 1,
        "stages": len(policy.stages),
        "describe": policy.stages[rollout.stage].describe(),
        "decisions": [{"at": e["at"], "message": e["message"]} for e in deployment.events[-5:]],
    }


def refused(gateway: Gateway, request: Request, what: str) -> Response | None:
    """The 401 for ``what`` (the dashboard's data, /monitor) when the prediction routes need the
    token and ``request`` lacks it; None when it may be answered. What the traffic looks like is
    guarded exactly as the traffic is."""
    options = gateway.options
    if not options.protect_predictions:
        return None
    given = request.headers.get("authorization", "").encode("latin-1")
    if options.token and hmac.compare_digest(given, f"Bearer {options.token}".encode()):
        return None
    return error_response(Unauthorized(f"this gateway's {what} needs 'Authorization: Bearer <token>'"))


def data_handler(gateway: Gateway) -> Handler:
    async def data(request: Request) -> Response:
        if (refusal := refused(gateway, request, "dashboard data")) is not None:
            return refusal
        return json_response(await gateway_data(gateway))

    return data


async def replica_batches(name: str, version: VersionRoute | None) -> Batches:
    """The batch figures of every ready replica of ``version``, summed per bucket (a replica that
    does not answer in time, or has no dashboard, adds nothing)."""
    endpoints = list(version.balancer.endpoints) if version is not None else []
    answers = await asyncio.gather(*(_replica_points(e.pool, name) for e in endpoints))
    summed: Batches = {}
    for point in (p for points in answers for p in points):
        batches, instances, largest = summed.get(point["t"], (0, 0, 0))
        summed[point["t"]] = (
            batches + int(point.get("batches") or 0),
            instances + int(point.get("instances") or 0),
            max(largest, int(point.get("max_batch") or 0)),
        )
    return summed


async def _replica_points(pool: Any, name: str) -> list[dict[str, Any]]:
    try:
        async with asyncio.timeout(REPLICA_TIMEOUT_S):
            status, _, body = await pool.request(b"GET", b"/dashboard/data", [], b"")
        if status != 200:
            return []
        found = [f for f in orjson.loads(body).get("functions", []) if f.get("name") == name]
        return [p for f in found for v in f.get("versions", []) for p in v.get("points", [])]
    except (UpstreamError, TimeoutError, orjson.JSONDecodeError, AttributeError, TypeError):
        return []


def with_batches(entry: dict[str, Any], found: Batches) -> None:
    """Put the replicas' batch figures into one version's points and last minute."""
    for point in entry["points"]:
        batches, instances, largest = found.get(point["t"], (0, 0, 0))
        point.update(_batch_fields(batches, instances, largest))
    recent = [found.get(p["t"], (0, 0, 0)) for p in entry["points"][-MINUTE_BUCKETS:]]
    entry["last_minute"].update(
        _batch_fields(
            sum(b for b, _, _ in recent),
            sum(i for _, i, _ in recent),
            max((m for _, _, m in recent), default=0),
        )
    )


def _batch_fields(batches: int, instances: int, largest: int) -> dict[str, Any]:
    mean = round(instances / batches, 2) if batches else None
    return {"batches": batches, "instances": instances, "mean_batch": mean, "max_batch": largest}

"""The gateway's ``/dashboard/data``: its own figures per function and version, with the split.

What it shows is what the gateway already shows without the admin token (``GET /functions``:
versions, weights, replicas ready and desired) plus aggregate request figures; never what the
token guards (replica addresses, images, scaling, logs). When the prediction routes need the
token (``protect_predictions``), so does this data: the page then asks for the token and sends
it as ``Authorization: Bearer``.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fnserve.gateway.proxy import Unauthorized
from fnserve.gateway.service import Gateway
from fnserve.runtime.dashboard import Handler
from fnserve.runtime.dashboard.series import BUCKET_S, by_version
from fnserve.runtime.http import error_response, json_response


def gateway_data(gateway: Gateway, now: float | None = None) -> dict[str, Any]:
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
        functions.append({"name": name, "versions": versions})
    return {"source": f"gateway ({gateway.target})", "bucket_s": BUCKET_S, "now": now, "functions": functions}


def data_handler(gateway: Gateway) -> Handler:
    options = gateway.options
    bearer = f"Bearer {options.token}".encode()

    async def data(request: Request) -> Response:
        if options.protect_predictions:
            given = request.headers.get("authorization", "").encode("latin-1")
            if not options.token or not hmac.compare_digest(given, bearer):
                return error_response(
                    Unauthorized("this gateway's dashboard data needs 'Authorization: Bearer <token>'")
                )
        return json_response(gateway_data(gateway))

    return data

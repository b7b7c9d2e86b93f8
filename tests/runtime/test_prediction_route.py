"""``PredictionRoute``: ``GET``/``HEAD``/``POST /function/{target}`` go to the endpoint straight away,
everything else to Starlette, which answers it as before."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from fnserve.runtime.app import PredictionRoute


def route() -> tuple[PredictionRoute, list[str], list[dict[str, Any]]]:
    """The route over a recording app and endpoint: (route, what the app saw, what the endpoint saw)."""
    to_app: list[str] = []
    to_endpoint: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        to_app.append(scope.get("path", scope["type"]))

    async def endpoint(request: Request) -> Response:
        to_endpoint.append(dict(request.path_params))
        return Response(b"ok")

    return PredictionRoute(app, endpoint), to_app, to_endpoint


def call(app: PredictionRoute, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app({"query_string": b"", "headers": [], **scope}, receive, send))
    return sent


def http(method: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": root_path}


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_a_prediction_goes_to_the_endpoint_with_its_target(method: str) -> None:
    app, to_app, to_endpoint = route()
    sent = call(app, http(method, "/function/recs@3"))
    assert to_endpoint == [{"target": "recs@3"}] and to_app == []
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"


@pytest.mark.parametrize(
    "scope",
    [
        http("PUT", "/function/recs"),  # its 405
        http("GET", "/function/"),  # no target: its 404
        http("GET", "/function/recs/more"),
        http("GET", "/functions"),
        http("GET", "/function/recs", root_path="/mounted"),  # its own path matching
        {"type": "lifespan"},
    ],
)
def test_everything_else_goes_to_starlette(scope: dict[str, Any]) -> None:
    app, to_app, to_endpoint = route()
    call(app, scope)
    assert to_endpoint == [] and len(to_app) == 1


def test_head_is_a_get_without_its_body(serve: Any) -> None:
    with serve("double") as client:
        get = client.get("/function/double?x=2")
        head = client.head("/function/double?x=2")
    assert get.json() == {"predictions": [4.0]}
    assert head.status_code == 200 and head.headers["content-length"] == get.headers["content-length"]


def test_the_general_way_still_answers_what_the_hot_path_leaves(serve: Any) -> None:
    with serve("double") as client:
        more = client.get("/function/double/more?x=2")
        assert more.status_code == 404 and more.json() == {"error": "no route for GET /function/double/more"}
        assert client.put("/function/double").status_code == 405

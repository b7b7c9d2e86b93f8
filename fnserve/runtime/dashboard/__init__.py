"""The dashboard: a page at ``/dashboard`` (served by `fn serve` and by the gateway) and its data.

The page's assets ship in the package (``static/``), so it works air-gapped: hand-written
JavaScript draws SVG charts, no CDN and no chart library. It polls ``/dashboard/data`` (this
server's figures, see :mod:`fnserve.runtime.dashboard.series`) and ``/monitor`` (drift, where
the server has it) every few seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ASSETS = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
Handler = Callable[[Request], Awaitable[Response]]


def routes(data: Handler) -> list[Route]:
    """``/dashboard`` with its assets (read once, here) and ``/dashboard/data`` answered by ``data``."""
    static = resources.files(__package__) / "static"
    loaded = {path: (static.joinpath(name).read_bytes(), kind) for path, (name, kind) in ASSETS.items()}

    def asset(path: str) -> Handler:
        body, kind = loaded[path]

        async def serve(_: Request) -> Response:
            # The page holds no data (that comes from /dashboard/data), so it is open and cacheable.
            return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

        return serve

    return [
        Route("/dashboard", asset("")),
        Route("/dashboard/", asset("")),
        Route("/dashboard/app.js", asset("app.js")),
        Route("/dashboard/style.css", asset("style.css")),
        Route("/dashboard/data", data),
    ]

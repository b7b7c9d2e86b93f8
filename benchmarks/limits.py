"""The two limits that every served number is compared with.

* ``model``: the model limit, the SavedModel's serving signature called in-process in a loop
  (no HTTP, no decoding; for recs with the vocabularies' id lookups before it, as every peer and
  fnserve's function do them), at the batch sizes of the scenarios; prints one JSON object.
* ``protocol-server``: the protocol limit, fnserve's HTTP stack (Hypercorn with fnserve's
  config, fnserve's request-id middleware and its prediction route, orjson; Starlette for the
  other paths) with a handler that reads the body and answers a constant: what HTTP alone costs
  on this machine. ``--router``: predictions through Starlette's router as well, the stack
  before fnserve's predictions left it (the limit issue 14's "today 0.75x" was measured against).

compare.py runs both pinned to the server core; by hand:

    taskset -c 0 .venv/bin/python benchmarks/limits.py model --seconds 2 --windows 3
    taskset -c 0 .venv/bin/python benchmarks/limits.py protocol-server --port 8199
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import scenarios
from peers.recs_model import RecsModel

BATCHES = {"recs": (1, 256, 1024), "tagger": (1, 64, 128)}  # 1024, 128: fnserve's max_batch_size


def signature(function: str) -> Callable[..., Any]:
    import tensorflow as tf

    return tf.saved_model.load(str(scenarios.checkpoint(function))).signatures["serving_default"]


def timed_loop(call: Callable[[], object], seconds: float, windows: int = 1) -> dict[str, float]:
    """Calls per second and the median call in the best of ``windows`` windows, after a warm-up
    that traces and fills caches (other processes can only slow the loop down)."""
    for _ in range(20):
        call()
    best: dict[str, float] = {}
    for _ in range(windows):
        durations = []
        started, cpu_started = time.perf_counter(), time.process_time()
        while (now := time.perf_counter()) - started < seconds:
            call()
            durations.append(time.perf_counter() - now)
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        window = {
            "calls_per_s": len(durations) / elapsed,
            "calls_per_cpu_s": len(durations) / cpu_s,  # what other processes on the core barely change
            "p50_ms": statistics.median(durations) * 1000,
        }
        if window["calls_per_s"] > best.get("calls_per_s", 0):
            best = window
    return best


def model_limits(seconds: float, windows: int = 1) -> dict[str, dict[str, float]]:
    """``{"recs@256": {"calls_per_s", "predictions_per_s", "p50_ms"}, ...}``."""
    out = {}
    recs = RecsModel(scenarios.checkpoint("recs"))
    for batch in BATCHES["recs"]:
        columns = scenarios.recs_columns(scenarios.recs_rows(batch, seed=batch))
        out[f"recs@{batch}"] = timed_loop(lambda c=columns: recs(c), seconds, windows)
    tagger = signature("tagger")
    for batch in BATCHES["tagger"]:
        pixels = scenarios.decoded(scenarios.photos(batch, seed=batch))
        out[f"tagger@{batch}"] = timed_loop(
            lambda p=pixels: {k: v.numpy() for k, v in tagger(photo=p).items()}, seconds, windows
        )
    for key, row in out.items():
        row["predictions_per_s"] = row["calls_per_s"] * int(key.split("@")[1])
        row["predictions_per_cpu_s"] = row["calls_per_cpu_s"] * int(key.split("@")[1])
    return out


def protocol_app(router: bool = False) -> Any:
    """fnserve's stack answering constants (``?k=N``: N constant predictions): its middleware,
    then ``/function/{name}`` straight to the handler as fnserve's ``PredictionRoute`` does, the
    rest through Starlette; ``router``: every path through Starlette's router and middleware,
    as fnserve did before it took its predictions out of them."""
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from fnserve.runtime.app import PredictionRoute
    from fnserve.runtime.http import RequestContext, json_response

    answers: dict[int, bytes] = {}

    async def constant(request: Request) -> Response:
        await request.body()  # the bytes arrive either way; parsing them is the server's work
        k = int(request.query_params.get("k", "1"))
        body = answers.get(k) or answers.setdefault(k, orjson.dumps({"predictions": [0.5] * k}))
        return Response(body, media_type="application/json")

    async def health(_: Request) -> Response:
        return json_response({"live": True})

    routes = [
        Route("/function/{name}", constant, methods=["GET", "POST"]),
        Route("/v2/models/{name}/infer", constant, methods=["POST"]),
        Route("/healthz", health),
    ]
    app = Starlette(routes=routes)
    return RequestContext(app if router else PredictionRoute(app, constant))


def serve_protocol(port: int, router: bool = False) -> None:
    from hypercorn.asyncio import serve

    from fnserve.runtime.server import bind_socket, hypercorn_config, run
    from fnserve.runtime.settings import Settings

    sock = bind_socket("127.0.0.1", port)
    print(f"protocol limit: listening on http://127.0.0.1:{port}", flush=True)
    # the same stack as `fn serve`: Hypercorn on the event loop fn serve's settings pick
    event_loop = Settings.load(scenarios.ROOT, os.environ).event_loop
    run(serve(protocol_app(router), hypercorn_config(sock, drain_timeout_s=1)), event_loop)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model", help="print the in-process model limits as JSON")
    model.add_argument("--seconds", type=float, default=2.0, help="seconds per measuring window")
    model.add_argument("--windows", type=int, default=3, help="measuring windows per batch size, best kept")
    server = sub.add_parser("protocol-server", help="serve the constant handler")
    server.add_argument("--port", type=int, required=True)
    server.add_argument(
        "--router", action="store_true", help="predictions through Starlette's router too (the old stack)"
    )
    args = parser.parse_args()
    if args.command == "model":
        print(json.dumps(model_limits(args.seconds, args.windows)))
    else:
        serve_protocol(args.port, args.router)


if __name__ == "__main__":
    main()

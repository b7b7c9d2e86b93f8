"""The servers under test and how each is asked for the scenarios' predictions.

A target is a server (how to start it, pinned, on a given port) plus, for each scenario, the
requests it answers in its own native format. fnserve's formats that a build does not serve
yet (Arrow, the v2 protocol) are probed first and reported as pending instead of measured.

Peers run from their own virtual environments (``.bench/venvs/<peer>``, made by compare.py
from ``peers/<peer>/requirements.txt``), never from fnserve's.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import scenarios as sc
from harness import WORK, Server
from scenarios import ROOT, Request, Scenario

HERE = ROOT / "benchmarks"
VARIANTS = {1: 64, 256: 4, 64: 4}  # request variants cycled per instances-per-request
# Peers' batching: the window that gave MLServer and LitServe their best throughput at
# concurrency 64 here (5 ms beat 2 ms and 10 ms; BENCH_PEER_WINDOW_S to try others), and max
# sizes that let all 64 single-instance requests (or 4 x 256 instances) share a call.
PEER_MAX_BATCH_REQUESTS = 64
PEER_BATCH_WINDOW_S = float(os.environ.get("BENCH_PEER_WINDOW_S", "0.005"))
BENTOML_MAX_BATCH_INSTANCES = 1024


def rows(s: Scenario, variant: int) -> list[dict[str, object]]:
    return sc.recs_rows(s.instances, seed=1000 * s.instances + variant)


def each(s: Scenario, make: Callable[[int], tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    return tuple(make(v) for v in range(VARIANTS[s.instances]))


def single(s: Scenario) -> bool:
    return s.function == "recs" and s.instances == 1


@dataclass(frozen=True)
class Target:
    """``name`` as in the table; ``role`` is fnserve, limit or peer; ``scenarios`` it runs."""

    name: str
    role: str
    server: Callable[[int], Server]
    requests: Callable[[Scenario], dict[str, Request]]
    peer: str | None = None  # venv of a peer
    batched: bool = True
    scenarios: tuple[str, ...] = field(default_factory=lambda: tuple(sc.SCENARIOS))


# ---- fnserve and the protocol limit (fnserve's venv) ----------------------------------------


def fnserve_server(port: int) -> Server:
    argv = [sys.executable, "-m", "fnserve.cli", "serve", "--port", str(port)]
    # No hot reload mid-run: every target serves the version that was newest at its start.
    env = {"COLUMNS": "200", "FNSERVE_RELOAD_INTERVAL_S": "3600"}
    return Server("fnserve", argv, port, "/readyz", env=env)


def fnserve_requests(s: Scenario) -> dict[str, Request]:
    if single(s):
        return {
            "GET query": Request(
                "GET", each(s, lambda v: (sc.query_path("/function/recs", rows(s, v)[0]), b""))
            )
        }
    json_type = {"Content-Type": "application/json"}
    arrow = {"Content-Type": sc.ARROW_STREAM, "Accept": sc.ARROW_STREAM}
    if s.function == "recs":
        return {
            "JSON instances": Request(
                "POST", each(s, lambda v: ("/function/recs", sc.instances_json(rows(s, v)))), json_type
            ),
            "Arrow": Request("POST", each(s, lambda v: ("/function/recs", sc.arrow_recs(rows(s, v)))), arrow),
            "v2 JSON": Request(
                "POST", each(s, lambda v: ("/v2/models/recs/infer", sc.v2_json(rows(s, v)))), json_type
            ),
        }
    photos = [sc.photos(s.instances, seed=v) for v in range(VARIANTS[s.instances])]
    pixels = [sc.decoded(p) for p in photos]
    return {
        "Arrow photo column": Request(
            "POST", tuple(("/function/tagger", sc.arrow_photos(p)) for p in photos), arrow
        ),
        "Arrow pixels (uint8 tensor)": Request(
            "POST", tuple(("/function/tagger", sc.arrow_pixels(p)) for p in pixels), arrow
        ),
        "v2 binary": v2_binary("/v2/models/tagger/infer", [sc.v2_binary_photos(p) for p in photos]),
        "v2 binary pixels (UINT8 tensor)": v2_binary(
            "/v2/models/tagger/infer", [sc.v2_binary_pixels(p) for p in pixels]
        ),
        "JSON base64 (not binary)": Request(
            "POST", tuple(("/function/tagger", sc.b64_photos_json(p)) for p in photos), json_type
        ),
    }


def v2_binary(path: str, framed: list[tuple[bytes, dict[str, str]]]) -> Request:
    """v2 binary bodies as one request: a request has one set of headers, so every variant's
    JSON header must be as long as the first's (``Inference-Header-Content-Length``)."""
    headers = framed[0][1]
    if any(h != headers for _, h in framed):
        raise ValueError(f"{path}: the v2 binary variants need different headers: {[h for _, h in framed]}")
    return Request("POST", tuple((path, body) for body, _ in framed), headers)


def protocol_server(port: int) -> Server:
    argv = [sys.executable, str(HERE / "limits.py"), "protocol-server", "--port", str(port)]
    return Server("protocol-limit", argv, port, "/healthz")


def protocol_requests(s: Scenario) -> dict[str, Request]:
    """fnserve's own requests, bodies read but not parsed, answered with a constant of the right
    length: what receiving each format's bytes and sending an answer cost, over HTTP alone."""
    if single(s):
        return fnserve_requests(s)
    out = {}
    for label, request in fnserve_requests(s).items():
        variants = tuple((f"{path}?k={s.instances}", body) for path, body in request.variants)
        out[f"{label}, constant answer"] = Request("POST", variants, request.headers)
    return out


# ---- peers (their own venvs) -----------------------------------------------------------------


def venv_bin(peer: str, name: str) -> str:
    return str(WORK / "venvs" / peer / "bin" / name)


def mlserver_server(batched: bool) -> Callable[[int], Server]:
    def make(port: int) -> Server:
        folder = WORK / "run" / f"mlserver-{'batched' if batched else 'unbatched'}"
        (folder / "recs").mkdir(parents=True, exist_ok=True)
        settings = {
            "debug": False,
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": port + 1,
            "metrics_endpoint": None,  # no Prometheus middleware: as lean as MLServer gets
            "gzip_enabled": False,
            "parallel_workers": 0,  # inference in the server process: on one core, no IPC hop
            "environments_dir": str(folder / "envs"),
            "metrics_dir": str(folder / "metrics"),
        }
        model = {
            "name": "recs",
            "implementation": "runtime.SavedModelRuntime",
            "parameters": {"uri": str(sc.checkpoint("recs"))},
            "max_batch_size": PEER_MAX_BATCH_REQUESTS if batched else 0,
            "max_batch_time": PEER_BATCH_WINDOW_S if batched else 0,
        }
        (folder / "settings.json").write_text(json.dumps(settings, indent=2))
        (folder / "recs" / "model-settings.json").write_text(json.dumps(model, indent=2))
        env = {"PYTHONPATH": str(HERE / "peers" / "mlserver")}
        name = f"mlserver-{'batched' if batched else 'unbatched'}"
        return Server(
            name,
            [venv_bin("mlserver", "mlserver"), "start", str(folder)],
            port,
            "/v2/models/recs/ready",
            env=env,
        )

    return make


def mlserver_requests(s: Scenario) -> dict[str, Request]:
    json_type = {"Content-Type": "application/json"}
    variants = each(s, lambda v: ("/v2/models/recs/infer", sc.v2_json(rows(s, v))))
    return {"v2 JSON": Request("POST", variants, json_type)}


def litserve_server(batched: bool) -> Callable[[int], Server]:
    def make(port: int) -> Server:
        env = {
            "BENCH_RECS_MODEL": str(sc.checkpoint("recs")),
            "BENCH_PORT": str(port),
            "BENCH_MAX_BATCH": str(PEER_MAX_BATCH_REQUESTS if batched else 1),
            "BENCH_BATCH_TIMEOUT_S": str(PEER_BATCH_WINDOW_S if batched else 0),
        }
        argv = [venv_bin("litserve", "python"), str(HERE / "peers" / "litserve" / "server.py")]
        return Server(f"litserve-{'batched' if batched else 'unbatched'}", argv, port, "/health", env=env)

    return make


def litserve_requests(s: Scenario) -> dict[str, Request]:
    json_type = {"Content-Type": "application/json"}
    if single(s):
        return {
            "JSON object": Request(
                "POST", each(s, lambda v: ("/predict", sc.jdump(rows(s, v)[0]))), json_type
            )
        }
    return {
        "JSON instances": Request(
            "POST", each(s, lambda v: ("/predict", sc.instances_json(rows(s, v)))), json_type
        )
    }


def bentoml_server(batched: bool) -> Callable[[int], Server]:
    def make(port: int) -> Server:
        env = {
            "BENCH_RECS_MODEL": str(sc.checkpoint("recs")),
            "BENCH_MAX_BATCH": str(BENTOML_MAX_BATCH_INSTANCES if batched else 1),
            "BENTOML_HOME": str(WORK / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "true",
        }
        argv = [
            venv_bin("bentoml", "bentoml"),
            "serve",
            "service:Recs",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        name = f"bentoml-{'batched' if batched else 'unbatched'}"
        return Server(name, argv, port, "/readyz", env=env, cwd=HERE / "peers" / "bentoml")

    return make


def bentoml_requests(s: Scenario) -> dict[str, Request]:
    json_type = {"Content-Type": "application/json"}
    return {
        "JSON instances": Request(
            "POST", each(s, lambda v: ("/predict", sc.instances_json(rows(s, v)))), json_type
        )
    }


PEER_SCENARIOS = ("recs-c64", "recs-c1", "recs-b256")
UNBATCHED_SCENARIOS = ("recs-c64", "recs-c1")


def all_targets() -> list[Target]:
    targets = [
        Target("fnserve", "fnserve", fnserve_server, fnserve_requests),
        Target("protocol limit", "limit", protocol_server, protocol_requests),
    ]
    peers = (
        ("MLServer", "mlserver", mlserver_server, mlserver_requests),
        ("LitServe", "litserve", litserve_server, litserve_requests),
        ("BentoML", "bentoml", bentoml_server, bentoml_requests),
    )
    for title, peer, server, requests in peers:
        for batched in (True, False):
            targets.append(
                Target(
                    f"{title} ({'batching on' if batched else 'batching off'})",
                    "peer",
                    server(batched),
                    requests,
                    peer=peer,
                    batched=batched,
                    scenarios=PEER_SCENARIOS if batched else UNBATCHED_SCENARIOS,
                )
            )
    return targets

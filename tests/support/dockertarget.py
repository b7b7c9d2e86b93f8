"""What the docker target's tests share: a tiny project and its images, a gateway over real
containers, and a loopback load generator.

    with docker_gateway(project, network, [deployment]) as gw:
        with Load(gw.url, x=3) as load:
            ...
        load.failed()                       # every answer that was not a 200

The gateway runs in this process (Hypercorn on an ephemeral loopback port, in a thread) and reaches
the replicas at their addresses on the private network, as `fn gateway --target docker` on a Linux
host does; the replicas are real containers of real images. Load comes from keep-alive HTTP/1.1
connections, each sending GETs (encoded once, as `fn bench` does) back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from fnserve.bench.http1 import encode_request
from fnserve.client.core import Call
from fnserve.docker.platform import DockerPlatform
from fnserve.docker.replicas import PROJECT_LABEL, DockerSettings, project_id
from fnserve.docker_engine import DockerEngine
from fnserve.gateway.app import create_app
from fnserve.gateway.platform import FunctionDeployment, Scaling, VersionDeployment
from fnserve.gateway.server import serve_gateway
from fnserve.gateway.service import Gateway, GatewayOptions
from fnserve.project import ProjectSettings
from fnserve.runtime.server import bind_socket
from fnserve.runtime.store import CheckpointStore
from tests.support.gateways import until

TOKEN = "test-admin-token"
OPTIONS = GatewayOptions(
    token=TOKEN, tick_s=0.2, poll_s=0.05, state_refresh_s=1.0, hold_timeout_s=60, checkpoint_check_s=0.5
)


@contextlib.contextmanager
def private_network(engine: DockerEngine, project: Path) -> Iterator[str]:
    """A network name of a test module's own; on the way out, the project's containers (whatever
    a test left) are removed, then the network."""
    name = f"fnserve-test-{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        for container in engine.list_containers({PROJECT_LABEL: project_id(project)}):
            engine.remove(container.id)
        engine.remove_network(name)


def project_settings(project: Path) -> ProjectSettings:
    overrides = {"store": (project / "store").as_uri(), "cache": str(project / "cache"), "drain_timeout_s": 3}
    return ProjectSettings.from_mapping(project, {}, {}, overrides)


def deployment(image: str, *versions: tuple[str, int, str], **scaling: Any) -> FunctionDeployment:
    """``deployment(image, ("a", 90, "1"), ("b", 10, "2"), min_replicas=1)``: the ``weighted`` function,
    one (label, weight, checkpoint version) per version, every version from ``image``."""
    return FunctionDeployment(
        "weighted",
        {label: VersionDeployment(image, weight, checkpoint) for label, weight, checkpoint in versions},
        scaling=Scaling(**scaling),
    )


@dataclasses.dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    platform: DockerPlatform

    def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.request(method, f"{self.url}/admin{path}", json=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def versions(self) -> dict[str, dict[str, Any]]:
        return {v["version"]: v for v in self.admin("GET", "/functions/weighted")["versions"]}

    def wait_ready(self, version: str, count: int, timeout_s: float = 60) -> dict[str, Any]:
        return until(
            lambda: (v := self.versions()[version])["ready"] == count and v,
            f"{count} ready replica(s) of weighted@{version}",
            timeout_s,
        )

    def containers(self) -> list[Any]:
        """Running replica containers (a warm pool's standbys not claimed are not replicas)."""
        running = self.platform._containers("weighted")
        return [c for c in running if c.state == "running" and not self.platform._in_pool(c)]


@contextlib.contextmanager
def docker_gateway(
    project: Path,
    network: str,
    deployments: list[FunctionDeployment],
    *,
    clock: Callable[[], float] | None = None,
    rollouts: bool = False,
) -> Iterator[RunningGateway]:
    """A gateway over the docker platform; on the way out it stops, and the function is deleted.
    ``clock``: the wall clock of its ``[train] schedule`` (a fast one runs a day in seconds);
    ``rollouts``: it watches the project's store for new checkpoints, as ``fn gateway`` does."""
    platform = DockerPlatform(project_settings(project), DockerEngine.connect(), DockerSettings(network))
    try:
        for d in deployments:
            platform.save_state(d)
    except BaseException:
        platform.close()
        raise
    store = (
        CheckpointStore((project / "store").as_uri(), cache_dir=project / "gateway-cache")
        if rollouts
        else None
    )
    gateway = Gateway(platform, OPTIONS, clock=clock, checkpoints=store.versions if store else None)
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    box: dict[str, Any] = {}

    async def main() -> None:
        box["stop"], box["loop"] = asyncio.Event(), asyncio.get_running_loop()
        await serve_gateway(create_app(gateway), gateway, sock, drain_timeout_s=2, stop=box["stop"])

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        until(lambda: gateway.started, "the gateway to start", 30)
        yield RunningGateway(url, gateway, platform)
    finally:
        cleanup = DockerPlatform(project_settings(project), DockerEngine.connect(), DockerSettings(network))
        if "loop" in box:
            box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        sock.close()
        for d in deployments:
            cleanup.delete(d.name)  # the containers outlive the gateway: stop and remove them
        cleanup.close()
        assert not thread.is_alive(), "the gateway did not stop"


def value(body: bytes) -> float:
    return float(orjson.loads(body)["predictions"][0])


class Load:
    """``workers`` keep-alive connections sending ``GET /function/weighted?x=...`` back to back, in
    a thread, until the ``with`` block ends (or ``total`` requests were sent). Strict: a request whose
    connection failed counts as failed (status 0); nothing is retried here."""

    def __init__(self, url: str, *, workers: int = 8, total: int | None = None, **params: Any):
        call = Call("GET", "/function/weighted", {k: str(v) for k, v in params.items()})
        self.url, self.raw, self.workers, self.total = url, encode_request(url, call), workers, total
        self.answers: Counter[tuple[int, bytes]] = Counter()
        self.latencies_s: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the load generator did not stop"

    def wait(self, timeout_s: float = 120) -> Load:
        self._thread.join(timeout_s)
        return self

    async def _main(self) -> None:
        sent = iter(range(self.total)) if self.total is not None else None
        await asyncio.gather(*(self._worker(sent) for _ in range(self.workers)))

    async def _worker(self, sent: Iterator[int] | None) -> None:
        parts = urlsplit(self.url)
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while not self._stop.is_set() and (sent is None or next(sent, None) is not None):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(60):
                    streams = streams or await asyncio.open_connection(parts.hostname, parts.port)
                    streams[1].write(self.raw)
                    status, body, closes = await _answer(streams[0])
                if closes:
                    streams[1].close()
                    streams = None
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                status, body = 0, repr(exc).encode()
                if streams is not None:
                    streams[1].close()
                streams = None
            self.latencies_s.append(time.perf_counter() - started)
            self.answers[(status, body)] += 1
        if streams is not None:
            streams[1].close()

    def values(self) -> Counter[float]:
        return Counter({value(body): n for (status, body), n in self.answers.items() if status == 200})

    def failed(self) -> Counter[tuple[int, bytes]]:
        return Counter({k: n for k, n in self.answers.items() if k[0] != 200})

    @property
    def count(self) -> int:
        return sum(self.answers.values())


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One response with a Content-Length (the gateway always sends one): status, body, and whether
    the server closes the connection after it (Hypercorn does after 1000 requests on one)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    lines = head.split("\r\n")
    length = next(int(line[15:]) for line in lines if line.startswith("content-length:"))
    closes = any(line.replace(" ", "") == "connection:close" for line in lines)
    return int(head.split(" ", 2)[1]), await reader.readexactly(length), closes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

"""Run a real gateway (Hypercorn on an ephemeral loopback port) over the local platform, in a thread.

    with running_gateway(tmp_path, deployments=[...]) as gw:
        httpx.get(f"{gw.url}/function/double?x=1")

Replicas are real `fn serve` processes; stopping the gateway stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from fnserve.gateway.app import create_app
from fnserve.gateway.async_calls import GatewayCalls
from fnserve.gateway.platform import FunctionDeployment, Scaling, VersionDeployment
from fnserve.gateway.server import serve_gateway
from fnserve.gateway.service import Gateway, GatewayOptions
from fnserve.local.platform import LocalPlatform
from fnserve.project import ProjectSettings
from fnserve.runtime.asynccalls.settings import settings_of
from fnserve.runtime.server import bind_socket
from fnserve.runtime.store import CheckpointStore

FNS = Path(__file__).parent / "fns"
TOKEN = "test-admin-token"
FAST = GatewayOptions(
    token=TOKEN, tick_s=0.1, poll_s=0.02, state_refresh_s=1.0, hold_timeout_s=30, checkpoint_check_s=0.3
)
T = TypeVar("T")


@dataclasses.dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    platform: LocalPlatform

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.request(method, f"{self.url}/admin{path}", json=body, headers=headers, timeout=30)

    def status(self, name: str) -> dict[str, Any]:
        response = self.admin("GET", f"/functions/{name}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_ready(self, name: str, version: str, count: int, timeout_s: float = 40) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            versions = {v["version"]: v for v in self.status(name)["versions"]}
            return versions[version] if versions[version]["ready"] == count else None

        return until(ready, f"{count} ready replica(s) of {name}@{version}", timeout_s)


def settings_for(project: Path, **overrides: Any) -> ProjectSettings:
    base = {"store": f"file://{project}/store", "cache": str(project / "cache"), "drain_timeout_s": 2.0}
    return ProjectSettings.from_mapping(project, {}, {}, {**base, **overrides})


def deployment(name: str, *versions: tuple[str, str, int, str], **scaling: Any) -> FunctionDeployment:
    """``deployment("double", ("1", "double", 100, "latest"), min_replicas=1)``: (label, tests/support/fns
    folder, weight, checkpoint version) per version."""
    return FunctionDeployment(
        name=name,
        versions={
            label: VersionDeployment(str(FNS / folder), weight, checkpoint)
            for label, folder, weight, checkpoint in versions
        },
        scaling=Scaling(**scaling),
    )


@contextlib.contextmanager
def running_gateway(
    project: Path,
    deployments: list[FunctionDeployment] = (),
    options: GatewayOptions = FAST,  # type: ignore[assignment]
    *,
    rollouts: bool = False,
    clock: Callable[[], float] | None = None,
    async_calls: dict[str, Any] | None = None,
) -> Iterator[RunningGateway]:
    """``rollouts``: the gateway watches the project's store for new checkpoints, as ``fn gateway``.
    ``clock``: the wall clock of its ``[train] schedule`` (a fast one runs a day in seconds).
    ``async_calls``: ``[async]`` settings: it takes asynchronous calls, queued in the project's store."""
    settings = settings_for(project)
    platform = LocalPlatform(settings)
    for d in deployments:
        platform.save_state(d)
    store = CheckpointStore(settings.store, cache_dir=project / "gateway-cache") if rollouts else None
    gateway = Gateway(platform, options, checkpoints=store.versions if store else None, clock=clock)
    calls = None
    if async_calls is not None:
        queue_store = CheckpointStore(settings.store, cache_dir=project / "gateway-cache")
        calls = GatewayCalls(gateway, queue_store, settings_of(async_calls))
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    loop_box: dict[str, Any] = {}

    async def main() -> None:
        stop = loop_box["stop"] = asyncio.Event()
        loop_box["loop"] = asyncio.get_running_loop()
        await serve_gateway(create_app(gateway, calls), gateway, sock, drain_timeout_s=2, stop=stop)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        until(lambda: gateway.started, "the gateway to start", 30)
        yield RunningGateway(url, gateway, platform)
    finally:
        if "loop" in loop_box:
            loop_box["loop"].call_soon_threadsafe(loop_box["stop"].set)
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the gateway did not stop"


def until(probe: Callable[[], T | None], what: str, timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result

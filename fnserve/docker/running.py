"""``fn run``: a function's image served in a container until ready.

running = serve_function(settings, "recs", engine, port=8080, on_output=print)
container = start_serving(engine, spec, wait_s=180)       # returns once /readyz answers 200
print(container.url)                                      # http://127.0.0.1:49153
engine.remove(container.id)
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from fnserve.docker.containers import StoreAccess, serving_spec, store_access
from fnserve.docker_engine import ContainerSpec, DockerEngine, EngineError
from fnserve.images import BuildError
from fnserve.images.builds import build_image, prepare_build
from fnserve.images.labels import BAKED_LABEL
from fnserve.images.plan import CONTAINER_PORT
from fnserve.project import ProjectSettings

LOG_TAIL = 30
Output = Callable[[str], None]


@dataclass(frozen=True)
class RunningContainer:
    id: str
    url: str  # where the function's runtime answers, e.g. http://127.0.0.1:49153
    seconds_to_ready: float


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (for containers on the host's network)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_serving(engine: DockerEngine, spec: ContainerSpec, *, wait_s: float = 180.0) -> RunningContainer:
    """Start a serving container and wait until its /readyz says ready; remove it if it never is."""
    started = time.perf_counter()
    container = engine.run(spec)
    try:
        if spec.network == "host":
            host, port = spec.environment["FNSERVE_HOST"], int(spec.environment["FNSERVE_PORT"])
        else:
            host, port = spec.ports[CONTAINER_PORT][0], engine.host_port(container, CONTAINER_PORT)
        url = f"http://{host}:{port}"
        _wait_ready(engine, container, url, wait_s)
    except BaseException:
        engine.remove(container)
        raise
    return RunningContainer(container, url, time.perf_counter() - started)


def _wait_ready(engine: DockerEngine, container: str, url: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    with httpx.Client(timeout=2.0) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            state = engine.state(container)
            if state.status in ("exited", "dead"):
                log = _log_tail(engine, container)
                raise BuildError(f"the container exited (code {state.exit_code}) before it was ready:\n{log}")
            if time.monotonic() > deadline:
                raise BuildError(
                    f"the container was not ready within {wait_s:.0f} s:\n{_log_tail(engine, container)}"
                )
            time.sleep(0.2)


def _log_tail(engine: DockerEngine, container: str) -> str:
    try:
        lines = list(engine.logs(container, tail=LOG_TAIL))
    except EngineError as exc:
        return f"  (no log: {exc})"
    return "\n".join(f"  | {line}" for line in lines) or "  (no output)"


def serve_function(
    settings: ProjectSettings,
    name: str,
    engine: DockerEngine,
    *,
    port: int,
    network: str | None = None,
    wait_s: float = 180.0,
    on_output: Output,
) -> RunningContainer:
    """Start ``fnserve/<name>:latest`` (built first when missing) and wait until it is ready.

    The image last built is what runs, baked or not; a note says when the function's sources
    have changed since.
    """
    plan = prepare_build(settings, name, engine, on_output=on_output)
    image = engine.image(plan.latest)
    if image is None:
        image = build_image(plan, engine, on_output=on_output).image
    elif _revision(image.labels) != plan.digest and not image.labels.get(BAKED_LABEL):
        on_output(
            f"note: functions/{name} changed since {plan.latest} was built: `fn build {name}` updates it"
        )
    if image.labels.get(BAKED_LABEL):
        access = StoreAccess()  # the image holds its own store
    else:
        access = store_access(settings.store, settings.storage_options, os.environ, writable=False)
    network = network or ("host" if access.loopback else None)
    if network == "host" and not port:
        port = free_port()
    spec = serving_spec(image.id, name, access, port=port, network=network)
    tag = next((t for t in image.tags if t != plan.latest), plan.latest)
    on_output(f"starting {tag}" + (" on the host's network" if network == "host" else ""))
    return start_serving(engine, spec, wait_s=wait_s)


def _revision(labels: Any) -> str:
    return str(labels.get("org.opencontainers.image.revision", ""))

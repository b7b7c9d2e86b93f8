"""Run function images: serve until ready, or train once and go.

    container = start_serving(engine, spec, wait_s=180)       # returns once /readyz answers 200
    print(container.url)                                      # http://127.0.0.1:49153
    engine.remove(container.id)

    version = train_in_container(engine, spec, store, "recs", on_output=print)   # published version

A training container is "born to do its job, then it dies": it is removed however it ends
(success, failure, Ctrl-C), and a failed run publishes nothing (a version exists only once its
manifest is written, last).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from fnserve.build import BuildError
from fnserve.build.plan import CONTAINER_PORT
from fnserve.docker_engine import ContainerSpec, DockerEngine, EngineError
from fnserve.runtime.errors import CheckpointError
from fnserve.runtime.store import CheckpointStore

LOG_TAIL = 30


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


def train_in_container(
    engine: DockerEngine,
    spec: ContainerSpec,
    store: CheckpointStore,
    checkpoint: str,
    *,
    on_output: Callable[[str], None],
) -> int:
    """Run a training container to its end, output streaming; returns the version it published."""
    before = _latest(store, checkpoint)
    container = engine.run(spec)
    try:
        for line in engine.logs(container, follow=True):
            on_output(line)
        code = engine.wait(container)
    finally:
        engine.remove(container)
    if code != 0:
        killed = " (killed: out of memory? raise --memory)" if code == 137 else ""
        raise BuildError(
            f"training {checkpoint!r} in {spec.image} failed (exit code {code}){killed}; "
            "nothing was published"
        )
    after = _latest(store, checkpoint)
    if after is None or after == before:
        raise BuildError(f"training {checkpoint!r} in {spec.image} finished but published no new version")
    return after


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


def _latest(store: CheckpointStore, checkpoint: str) -> int | None:
    try:
        return store.latest(checkpoint)
    except CheckpointError as exc:
        raise BuildError(f"cannot read the store {store.root}: {exc}") from None

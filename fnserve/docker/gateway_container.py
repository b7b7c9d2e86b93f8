"""What ``fn deploy --target docker`` and ``fn build --gateway`` do through the engine: the gateway's
image, and its container started (or replaced when its image or settings changed) and waited for.

    image = ensure_gateway_image(settings, engine, print).plan.image
    url = start_gateway(settings, engine, print)          # http://127.0.0.1:8080, ready
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping

import httpx

from fnserve.docker.gateway import REPOSITORY, engine_socket, gateway_spec, plan_gateway_image
from fnserve.docker.replicas import DockerSettings, project_id
from fnserve.docker_engine import START_HINT, DockerEngine, EngineError
from fnserve.gateway.server import admin_token, gateway_url
from fnserve.images import BuildError
from fnserve.images.builds import BuildResult, build_image, ensure_base_image
from fnserve.images.inputs import IMAGE_EXTRAS, host_inputs, runtime_requirements
from fnserve.images.labels import PROJECT_LABEL, ROLE_LABEL, SPEC_LABEL
from fnserve.project import ProjectSettings

Output = Callable[[str], None]
LOG_TAIL = 30


def ensure_gateway_image(
    settings: ProjectSettings, engine: DockerEngine, on_output: Output, *, force: bool = False
) -> BuildResult:
    """``fnserve/gateway:<content hash>`` (and ``:<fnserve version>``, ``:latest``), built if missing."""
    from fnserve import __version__

    base = ensure_base_image(settings, engine, on_output)
    inputs = host_inputs(base_image_id=base.id)
    deploy_extra = runtime_requirements(extras=(*IMAGE_EXTRAS, "deploy"))
    extra = tuple(r for r in deploy_extra if r not in inputs.runtime_requirements)
    plan = plan_gateway_image(inputs, extra, base_image=settings.base_image)
    result = build_image(plan, engine, on_output=on_output, force=force)
    engine.tag(result.image.id, f"{REPOSITORY}:{__version__}")
    if not result.reused:
        on_output(f"built {plan.image} in {result.seconds:.1f} s")
    return result


def start_gateway(
    settings: ProjectSettings,
    engine: DockerEngine,
    on_output: Output,
    *,
    wait_s: float = 60.0,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The docker target's gateway container, running and ready; returns the URL it answers at.

    A gateway container of this project that runs the wanted image and settings is left alone (its
    routing state and scale-to-zero clocks go on); one that differs is drained and replaced."""
    environ = os.environ if environ is None else environ
    try:
        docker = DockerSettings.load(settings.project_dir, environ)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    url = gateway_url(settings)
    image = docker.gateway_image or ensure_gateway_image(settings, engine, on_output).image.id
    socket = engine_socket(environ)
    try:
        socket_gid = os.stat(socket).st_gid
    except OSError as exc:
        raise BuildError(
            f"the engine's socket {socket} is not there ({exc.strerror}): {START_HINT}"
        ) from None
    user = f"{os.getuid()}:{os.getgid()}"
    spec = gateway_spec(
        settings, docker, image, socket=socket, socket_gid=socket_gid, user=user, environ=environ
    )
    engine.ensure_network(docker.network, {ROLE_LABEL: "network"})
    for found in engine.list_containers(name=docker.gateway_name):
        if found.labels.get(PROJECT_LABEL) != project_id(settings.project_dir):
            raise BuildError(
                f"the container {found.name} is another project's gateway (or not fnserve's): remove it "
                f"(docker rm -f {found.name}) or name this project's: [docker] gateway_name in fn.toml"
            )
        if found.state == "running" and found.labels.get(SPEC_LABEL) == spec.labels[SPEC_LABEL]:
            _wait_ready(engine, found.id, url, wait_s)
            return url
        why = "its image or settings changed" if found.state == "running" else f"it was {found.state}"
        on_output(f"replacing the gateway container {found.name} ({why})")
        engine.stop(found.id, timeout_s=int(settings.drain_timeout_s) + 5)
        engine.remove(found.id)
    if _answers(url):
        on_output(f"a gateway already answers at {url}: deploying through it")
        return url
    admin_token(settings, create=True)  # made here, not in the container: `fn` finds it in the project
    on_output(f"starting the gateway container {docker.gateway_name} at {url}")
    try:
        container = engine.run(spec)
    except EngineError as exc:
        if "already allocated" in str(exc) or "address already in use" in str(exc):
            raise BuildError(
                f"cannot publish the gateway on {settings.gateway_host}:{settings.gateway_port}: the port "
                "is taken (by `fn serve` or `fn gateway`?). Stop that, or choose another port: "
                "[gateway] port in fn.toml or FNSERVE_GATEWAY_PORT"
            ) from None
        raise
    _wait_ready(engine, container, url, wait_s)
    return url


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _wait_ready(engine: DockerEngine, container: str, url: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        state = engine.state(container)
        if state.status in ("exited", "dead") or time.monotonic() > deadline:
            try:
                log = "\n".join(f"  | {line}" for line in engine.logs(container, tail=LOG_TAIL))
            except EngineError as exc:
                log = f"  (no log: {exc})"
            what = f"exited (code {state.exit_code})" if state.exit_code is not None else "was not ready"
            raise BuildError(f"the gateway container {what} within {wait_s:.0f} s:\n{log or '  (no output)'}")
        time.sleep(0.2)

"""Run the gateway on Hypercorn, and the admin token and URL that `fn` commands share with it.

The token is ``[gateway] token`` / ``FNSERVE_GATEWAY_TOKEN`` when set; otherwise one is
generated the first time the gateway starts and kept in ``.fnserve/gateway-token`` (mode 0600),
where the CLI of the same project finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from fnserve.gateway.service import Gateway
from fnserve.project import ProjectSettings, state_dir
from fnserve.runtime.http import RequestContext
from fnserve.runtime.redact import register_secrets
from fnserve.runtime.server import serve_until_stopped

log = logging.getLogger("fnserve.gateway")


def token_file(settings: ProjectSettings) -> Path:
    return state_dir(settings.project_dir, "gateway-token")


def admin_token(settings: ProjectSettings, *, create: bool = False) -> tuple[str, bool]:
    """``(token, generated now)``: the configured token, the saved one, or (``create``) a new one."""
    if settings.gateway_token:
        return settings.gateway_token, False
    path = token_file(settings)
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip(), False
    if not create:
        return "", False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made one meanwhile: use it
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def gateway_url(settings: ProjectSettings) -> str:
    """Where `fn` commands reach the gateway: ``[gateway] url``, else its bind address."""
    if settings.gateway_url:
        return settings.gateway_url
    host = settings.gateway_host if settings.gateway_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.gateway_port}"


async def serve_gateway(
    app: RequestContext,
    gateway: Gateway,
    sock: socket.socket,
    *,
    drain_timeout_s: float,
    on_ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then finish in-flight requests and return."""

    def begin_drain() -> None:
        log.info("gateway shutting down: draining %d in-flight request(s)", app.in_flight)
        gateway.draining = True

    async def started() -> None:
        while not gateway.started:
            await asyncio.sleep(0.02)

    await serve_until_stopped(
        app,
        sock,
        drain_timeout_s=drain_timeout_s,
        begin_drain=begin_drain,
        until_ready=started,
        on_ready=on_ready,
        stop=stop,
    )


def run(
    settings: ProjectSettings, target: str, *, on_ready: Callable[[str, str, bool], None] | None = None
) -> None:
    """Run ``fn gateway`` in this process until SIGTERM/Ctrl-C: ``on_ready(url, token, new_token)``.

    Raises :class:`~fnserve.gateway.platform.PlatformError` for an unavailable target and
    ``OSError`` when the address cannot be bound.
    """
    from fnserve.gateway.app import create_app
    from fnserve.gateway.async_calls import GatewayCalls
    from fnserve.gateway.service import GatewayOptions
    from fnserve.gateway.targets import platform_for
    from fnserve.runtime.server import bind_socket, run
    from fnserve.runtime.store import CheckpointStore

    register_secrets(settings.secrets())  # its logs and answers never show the store's credentials
    platform = platform_for(target, settings)
    token, created = admin_token(settings, create=True)
    options = GatewayOptions(
        token=token,
        protect_predictions=settings.gateway_auth == "token",
        max_body_bytes=settings.max_body_bytes,
    )
    store = CheckpointStore(
        settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
    )
    gateway = Gateway(platform, options, checkpoints=store.versions)  # rollouts notice new checkpoints
    calls = GatewayCalls(gateway, store, settings.async_calls)  # Prefer: respond-async, GET /async/{id}
    sock = bind_socket(settings.gateway_host, settings.gateway_port)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    try:
        run(
            serve_gateway(
                create_app(gateway, calls),
                gateway,
                sock,
                drain_timeout_s=settings.drain_timeout_s,
                on_ready=(lambda: on_ready(url, token, created)) if on_ready else None,
            ),
            settings.event_loop,
        )
    finally:
        sock.close()

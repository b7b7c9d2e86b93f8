"""The gateway's image and, for the ``docker`` target, its container, as data.

The image (``fn build --gateway``) is ``fn gateway`` with fnserve's ``deploy`` extra (the Docker and
Kubernetes clients): ``fnserve/gateway:<content hash>``, also tagged ``:<fnserve version>`` and
``:latest`` (the default ``[k8s] gateway_image``). Its runtime layer is the function images' own,
so a machine that built a function reuses it.

With Docker the gateway runs in a container on the target's private network, published on
``[gateway] host:port`` (127.0.0.1:8080), restarted with the engine, and given the engine's socket
so it can scale replicas. The project folder is mounted at its own path and is the working
directory: the gateway reads the same ``fn.toml``, deployment state and admin token as the CLI, and
the host paths it hands the engine (a ``file://`` store to mount into replicas) mean the same in
there. It runs as the user who deployed (files it writes stay theirs), in the socket's group.

>>> engine_socket({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"})
'/run/user/1000/docker.sock'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from fnserve import __version__
from fnserve.docker.containers import CREDENTIAL_PREFIXES, TMPFS
from fnserve.docker.replicas import DockerSettings, project_id
from fnserve.docker_engine import ContainerSpec
from fnserve.images import BuildError
from fnserve.images.context import DEFAULT_IGNORE, ContextFile, context_digest, folder_files, parse_ignore
from fnserve.images.inputs import BuildInputs
from fnserve.images.labels import FNSERVE_VERSION_LABEL, PROJECT_LABEL, ROLE_LABEL, SPEC_LABEL, TEMPLATE_LABEL
from fnserve.images.plan import TAG_LENGTH, BuildPlan
from fnserve.images.templates import FACTS, load_template, render
from fnserve.project import DEFAULT_PORT, ProjectSettings

REPOSITORY = "fnserve/gateway"
PORT = DEFAULT_PORT  # inside the container
SOCKET_IN_CONTAINER = "/var/run/docker.sock"
# Set for the container by the platform itself; the user's other FNSERVE_* settings are passed on.
_OWN_SETTINGS = (
    "FNSERVE_GATEWAY_HOST",
    "FNSERVE_GATEWAY_PORT",
    "FNSERVE_GATEWAY_TARGET",
    "FNSERVE_GATEWAY_URL",
)


def plan_gateway_image(inputs: BuildInputs, requirements: tuple[str, ...], *, base_image: str) -> BuildPlan:
    """Everything ``fn build --gateway`` sends to the engine; ``requirements``: the deploy extra, pinned."""
    template = load_template("gateway", kind="gateway")
    values = {**FACTS, "base_image": base_image}
    dockerfile = render(template.dockerfile, values, where="template 'gateway'")
    files = [
        ContextFile("Dockerfile", dockerfile.encode()),
        ContextFile(".dockerignore", DEFAULT_IGNORE.encode()),
        ContextFile("build/pip.conf", inputs.pip_config.encode()),
        ContextFile("build/ca-certificates.crt", inputs.ca_bundle),
        ContextFile("build/runtime-requirements.txt", _lines(inputs.runtime_requirements)),
        ContextFile("build/gateway-requirements.txt", _lines(requirements)),
        *folder_files(inputs.fnserve_package, "fnserve", parse_ignore(DEFAULT_IGNORE)),
    ]
    digest = context_digest(files, f"base={base_image}@{inputs.base_image_id}")
    labels = {
        "org.opencontainers.image.title": REPOSITORY,
        "org.opencontainers.image.description": "the fnserve gateway (fn gateway)",
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.revision": digest,
        "org.opencontainers.image.base.name": base_image,
        FNSERVE_VERSION_LABEL: __version__,
        TEMPLATE_LABEL: template.name,
        ROLE_LABEL: "gateway",
    }
    return BuildPlan(
        function="gateway",
        template=template.name,
        repository=REPOSITORY,
        tag=digest[:TAG_LENGTH],
        digest=digest,
        base_image=base_image,
        dockerfile=dockerfile,
        files=tuple(sorted(files, key=lambda f: f.path)),
        labels=MappingProxyType(labels),
        checkpoint="none",
        checkpoints=(),
        baked=False,
    )


def gateway_spec(
    settings: ProjectSettings,
    docker: DockerSettings,
    image: str,
    *,
    socket: str,
    socket_gid: int,
    user: str,
    environ: Mapping[str, str],
) -> ContainerSpec:
    """The gateway's container: ``fn gateway --target docker`` in the project, on the network.

    Its ``SPEC_LABEL`` is a digest of everything else, so a changed image or setting replaces it."""
    project = str(settings.project_dir)
    mounts = {socket: (SOCKET_IN_CONTAINER, "rw"), project: (project, "rw")}
    store = urlsplit(settings.store)
    if store.scheme == "file" and not Path(store.path).is_relative_to(settings.project_dir):
        mounts[store.path] = (store.path, "ro")  # a store elsewhere: the platform checks it is there
    env = {
        key: value
        for key, value in environ.items()
        if (key.startswith("FNSERVE_") and key not in _OWN_SETTINGS) or key.startswith(CREDENTIAL_PREFIXES)
    }
    env.update(
        FNSERVE_GATEWAY_HOST="0.0.0.0",
        FNSERVE_GATEWAY_PORT=str(PORT),
        FNSERVE_GATEWAY_TARGET="docker",
        FNSERVE_DOCKER_NETWORK=docker.network,
        FNSERVE_DOCKER_GATEWAY_NAME=docker.gateway_name,
    )
    spec = ContainerSpec(
        image=image,
        name=docker.gateway_name,
        environment=env,
        ports={PORT: (settings.gateway_host, settings.gateway_port)},
        mounts=mounts,
        tmpfs=TMPFS,
        read_only=True,
        user=user,
        group_add=(str(socket_gid),),
        network=docker.network,
        working_dir=project,
        restart="unless-stopped",
        labels={ROLE_LABEL: "gateway", PROJECT_LABEL: project_id(settings.project_dir)},
    )
    described = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
    digest = hashlib.sha256(described.encode()).hexdigest()[:12]
    return dataclasses.replace(spec, labels={**spec.labels, SPEC_LABEL: digest})


def engine_socket(environ: Mapping[str, str]) -> str:
    """The engine's unix socket on this machine, which the gateway container gets."""
    host = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        raise BuildError(
            f"DOCKER_HOST is {host}: the gateway container needs the engine's unix socket on this "
            "machine; run the gateway yourself instead (fn gateway --target docker)"
        )
    return host[len("unix://") :]


def _lines(items: tuple[str, ...]) -> bytes:
    return "".join(f"{item}\n" for item in items).encode()

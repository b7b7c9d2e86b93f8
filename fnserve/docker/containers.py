"""Containers as data: how a function image is started to serve, or to train.

Functions from settings and choices to a :class:`~fnserve.docker_engine.ContainerSpec`; the file
system is touched only to check that a ``file://`` store or data set exists (and to create a store
that training writes to).
A ``file://`` store or data set is mounted into the container; any other URL (s3://, gs://, ...)
is passed as it is, with the store's fsspec options as JSON and the storage credentials of this
environment (``AWS_*``, ...) given at run time: nothing of the kind is in the image. A database
data source (``postgresql://``, ``mysql://``) gets its own credential variables the same way. A
store or database on this machine's loopback is reachable only with the host's network.

>>> access = store_access("s3://models/ckpt", {}, {"AWS_ACCESS_KEY_ID": "k", "HOME": "/root"}, writable=False)
>>> sorted(access.environment)
['AWS_ACCESS_KEY_ID', 'FNSERVE_STORE']
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fnserve.docker_engine import ContainerSpec
from fnserve.images import BuildError
from fnserve.images.labels import FUNCTION_LABEL, ROLE_LABEL
from fnserve.images.plan import CONTAINER_PORT
from fnserve.runtime.databases import DatabaseSource, credentials, is_database_url
from fnserve.runtime.redact import redact_url

STORE_MOUNT = "/fnserve/store"
DATA_MOUNT = "/fnserve/data"
# Storage credentials and endpoints, passed from this environment to the container at run time.
CREDENTIAL_PREFIXES = ("AWS_", "GOOGLE_", "GCE_", "AZURE_STORAGE_", "HADOOP_", "KRB5")
TMPFS = {"/tmp": "rw,nosuid,nodev,size=2g,mode=1777"}  # HOME, caches and temp files
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class StoreAccess:
    environment: Mapping[str, str] = field(default_factory=dict)
    mounts: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    loopback: bool = False  # an endpoint on this machine's loopback: needs the host's network


def store_access(
    store: str, options: Mapping[str, object], environ: Mapping[str, str], *, writable: bool
) -> StoreAccess:
    """How a container reaches the checkpoint store at ``store``."""
    scheme = urlsplit(store).scheme or "file"
    if scheme == "memory":
        raise BuildError(
            f"the store {redact_url(store)} lives in this process's memory: a container cannot reach it"
        )
    if scheme == "file":
        folder = Path(urlsplit(store).path)
        if writable:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise BuildError(
                f"the store {redact_url(store)} does not exist: train the function first (fn train NAME)"
            )
        mode = "rw" if writable else "ro"
        return StoreAccess({"FNSERVE_STORE": f"file://{STORE_MOUNT}"}, {str(folder): (STORE_MOUNT, mode)})
    env = {"FNSERVE_STORE": store, **_credentials(environ)}
    if options:
        env["FNSERVE_STORE_OPTIONS"] = json.dumps(options, sort_keys=True)
    return StoreAccess(env, loopback=_on_loopback(options, environ))


def data_access(data: str | None, environ: Mapping[str, str]) -> StoreAccess:
    """How a training container reads its data set: a local file or folder is mounted read-only;
    a database gets its credential variables from this environment (``PGPASSWORD``, ...), and a
    server on this machine's loopback the host's network.

    >>> access = data_access("postgresql://127.0.0.1/shop?table=t", {"PGPASSWORD": "pw", "AWS_X": "1"})
    >>> sorted(access.environment), access.loopback
    (['FNSERVE_DATA', 'PGPASSWORD'], True)
    """
    if not data:
        return StoreAccess()
    if is_database_url(data):
        source = DatabaseSource.parse(data)
        return StoreAccess({"FNSERVE_DATA": data, **credentials(data, environ)}, loopback=source.on_loopback)
    scheme = urlsplit(data).scheme
    if scheme in ("", "file"):
        path = Path(urlsplit(data).path if scheme else data).resolve()
        if not path.exists():
            raise BuildError(f"training data {redact_url(data)} does not exist")
        inside = f"{DATA_MOUNT}/{path.name}"
        return StoreAccess({"FNSERVE_DATA": f"file://{inside}"}, {str(path): (inside, "ro")})
    return StoreAccess({"FNSERVE_DATA": data, **_credentials(environ)}, loopback=_on_loopback({}, environ))


def serving_spec(
    image: str,
    function: str,
    access: StoreAccess,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    network: str | None = None,
    name: str | None = None,
) -> ContainerSpec:
    """The image serving its function: read-only root, /tmp on tmpfs, port published on ``host``.

    With the host's network the runtime binds ``host:port`` itself (``port`` must then be set).
    """
    env = dict(access.environment)
    if network == "host":
        if not port:
            raise BuildError("with the host's network the port must be given (not 0)")
        env.update(FNSERVE_HOST=host, FNSERVE_PORT=str(port))
    return ContainerSpec(
        image=image,
        name=name,
        environment=env,
        ports={} if network == "host" else {CONTAINER_PORT: (host, port)},
        mounts=access.mounts,
        tmpfs=TMPFS,
        read_only=True,
        network=network,
        labels={ROLE_LABEL: "serve", FUNCTION_LABEL: function},
    )


def training_spec(
    image: str,
    function: str,
    store: StoreAccess,
    data: StoreAccess,
    *,
    cpus: float | None = None,
    memory_bytes: int | None = None,
    network: str | None = None,
    user: str | None = None,
    name: str | None = None,
) -> ContainerSpec:
    """The image running ``functions/<function>/train.py`` once, publishing to the store."""
    return ContainerSpec(
        image=image,
        name=name,
        entrypoint=["python", f"/srv/functions/{function}/train.py"],
        environment={
            **data.environment,
            **store.environment,
            "FNSERVE_FUNCTION": function,
            "FNSERVE_PROJECT": "/srv",
        },
        mounts={**data.mounts, **store.mounts},
        tmpfs=TMPFS,
        read_only=True,
        network=network,
        user=user,
        cpus=cpus,
        memory_bytes=memory_bytes,
        labels={ROLE_LABEL: "train", FUNCTION_LABEL: function},
    )


def local_user(access: StoreAccess) -> str | None:
    """Write to a mounted store as this user, so the files it publishes are ours; else the image's."""
    if any(mode == "rw" for _, mode in access.mounts.values()):
        return f"{os.getuid()}:{os.getgid()}"
    return None


def parse_memory(text: str) -> int:
    """A memory size in bytes: ``512m``, ``2g``, ``2Gi``, ``1.5G`` or a plain number of bytes.

    >>> parse_memory("2g"), parse_memory("512Mi")
    (2147483648, 536870912)
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise ValueError(f"memory {text!r} must be a size like 512m, 2g or 2Gi")
    value = float(match[1]) * 1024 ** " kmgt".index(match[2] or " ")
    if value < 6 * 2**20:
        raise ValueError(f"memory {text!r} is too small: a container needs at least 6m")
    return int(value)


def _credentials(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k.startswith(CREDENTIAL_PREFIXES)}


def _on_loopback(options: Mapping[str, object], environ: Mapping[str, str]) -> bool:
    client_kwargs = options.get("client_kwargs")
    endpoints = [
        options.get("endpoint_url"),
        client_kwargs.get("endpoint_url") if isinstance(client_kwargs, Mapping) else None,
        environ.get("AWS_ENDPOINT_URL"),
        environ.get("AWS_ENDPOINT_URL_S3"),
    ]
    for endpoint in endpoints:
        if isinstance(endpoint, str) and (urlsplit(endpoint).hostname or "").startswith(_LOOPBACK):
            return True
    return False

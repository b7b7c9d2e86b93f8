"""What this machine contributes to a build: pinned runtime requirements, pip's index settings,
the CA bundle pip trusts, and (with --bake-checkpoint) a checkpoint from the store.

These are read here, once, and handed to the planner as :class:`BuildInputs`. The pip
settings and CA bundle are only for the dependency stage of the Dockerfile: they never reach a
layer of the image. Local indexes (``file://``, find-links folders) cannot be seen from inside a
build and are left out; an http(s) index is kept, so a build uses the same mirror as this host.

>>> pip_config({"global.index-url": "https://mirror.example/simple", "global.find-links": "/opt/wheels"})
'[global]\\nindex-url = https://mirror.example/simple\\n'
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fsspec.core import url_to_fs

from fnserve.images import BuildError
from fnserve.images.source import FunctionSource
from fnserve.runtime.errors import CheckpointError
from fnserve.runtime.redact import redact_url
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import MANIFEST_NAME, CheckpointStore

# fnserve's own extras that every image gets: reading checkpoints from S3 needs s3fs; the LiteRT
# interpreter (~21 MB) lets any image serve an `fn optimize` flatbuffer version.
IMAGE_EXTRAS = ("s3", "litert")
MODEL_FILE = "fnserve-model.json"  # a version's model descriptor (fnserve.runtime.models); absent: SavedModel
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
_URL_KEYS = {"index-url", "extra-index-url"}
_PLAIN_KEYS = {"trusted-host", "timeout", "default-timeout", "retries"}


@dataclass(frozen=True)
class BakedCheckpoint:
    """One published version, fetched and verified, to be copied into the image's own store."""

    name: str
    version: int
    digest: str  # sha256 of the manifest
    files: Mapping[str, Path]  # path inside the version folder -> verified local copy
    manifest: bytes  # the manifest exactly as published
    model_format: str = "savedmodel"  # from the version's model descriptor: what the image must carry


@dataclass(frozen=True)
class BuildInputs:
    runtime_requirements: tuple[str, ...]  # fnserve's own dependencies, pinned as installed here
    pip_config: str  # pip.conf for the dependency stage
    ca_bundle: Path | bytes  # CA certificates pip trusts in the dependency stage
    fnserve_package: Path  # the fnserve package folder copied into the image
    base_image_id: str = ""  # the engine's id of the base image: a rebuilt base changes the tag
    baked: BakedCheckpoint | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # more values folded into the tag


def host_inputs(base_image_id: str = "", baked: BakedCheckpoint | None = None) -> BuildInputs:
    """The inputs as this machine has them."""
    import fnserve

    items = pip_config_items()
    return BuildInputs(
        runtime_requirements=tuple(runtime_requirements()),
        pip_config=pip_config(items),
        ca_bundle=ca_bundle(items, os.environ),
        fnserve_package=Path(fnserve.__file__).parent,
        base_image_id=base_image_id,
        baked=baked,
    )


def runtime_requirements(distribution: str = "fnserve", extras: tuple[str, ...] = IMAGE_EXTRAS) -> list[str]:
    """fnserve's dependencies (and those of ``extras``), each pinned to the version installed here."""
    pinned = []
    for requirement in importlib.metadata.requires(distribution) or []:
        spec, _, marker = (part.strip() for part in requirement.partition(";"))
        if "extra ==" in marker:
            if not any(marker.replace('"', "'") == f"extra == '{e}'" for e in extras):
                continue
            marker = ""
        # A platform marker (uvloop's "sys_platform != 'win32'") stays: pip judges it in the image.
        platform = f"; {marker}" if marker else ""
        name = spec.split("[")[0]
        for stop in "<>=!~ ":
            name = name.split(stop)[0]
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}{platform}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(spec + platform)  # not installed here: let pip pick within fnserve's bounds
    return pinned


def pip_config_items() -> dict[str, str]:
    """``pip config list`` of this Python: files and PIP_* variables, as pip itself merges them."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    items = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            try:
                items[key.strip()] = str(ast.literal_eval(value.strip()))
            except (ValueError, SyntaxError):
                items[key.strip()] = value.strip()
    return items


def pip_config(items: Mapping[str, str]) -> str:
    """A pip.conf with the index settings a build can use: http(s) indexes, hosts, timeouts."""
    chosen: dict[str, str] = {}
    for item, value in sorted(items.items(), key=lambda kv: kv[0].startswith(":env:")):  # env wins
        key = item.rsplit(".", 1)[-1]
        if key in _URL_KEYS:
            urls = [u for u in value.split() if u.startswith(("http://", "https://"))]
            if urls:
                chosen[key] = " ".join(urls)
        elif key in _PLAIN_KEYS:
            chosen["timeout" if key == "default-timeout" else key] = value
    return "[global]\n" + "".join(f"{key} = {value}\n" for key, value in sorted(chosen.items()))


def ca_bundle(items: Mapping[str, str], environ: Mapping[str, str]) -> Path | bytes:
    """The CA bundle pip uses here (a proxy's CA included); certifi's when there is none."""
    candidates = [
        environ.get("PIP_CERT"),
        items.get(":env:.cert"),
        items.get("global.cert"),
        items.get("install.cert"),
        environ.get("SSL_CERT_FILE"),
        environ.get("REQUESTS_CA_BUNDLE"),
        *CA_BUNDLES,
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    from pip._vendor import certifi  # pip is always there: the venv that runs fn has it

    return Path(certifi.where())


def fetch_baked_checkpoint(settings: Settings, source: FunctionSource, version: str) -> BakedCheckpoint:
    """Fetch and verify the function's checkpoint for baking; ``version`` "" means the one it asks for."""
    if len(source.checkpoints) != 1:
        raise BuildError(
            f"--bake-checkpoint: {source.folder / 'predict.py'} has {len(source.checkpoints)} functions "
            "that load a checkpoint; baking needs exactly one"
        )
    ref = source.checkpoints[0]
    if "://" in ref.checkpoint or "?" in (ref.checkpoint, ref.version):
        raise BuildError(
            f"--bake-checkpoint: {ref.function} loads {redact_url(ref.checkpoint)}@{ref.version}, "
            "not a checkpoint of the project store named by literal @predict options"
        )
    if version and ref.version != "latest" and version != ref.version:
        raise BuildError(f"--bake-checkpoint {version}: {ref.function} is pinned to version {ref.version}")
    store = CheckpointStore(
        settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
    )
    try:
        checkpoint = store.fetch(ref.checkpoint, version or ref.version)
        url = f"{checkpoint.url}/{MANIFEST_NAME}"
        fs, path = url_to_fs(url, **settings.storage_options)
        manifest = fs.cat_file(path)
    except CheckpointError as exc:
        raise BuildError(f"--bake-checkpoint: {exc}") from None
    if hashlib.sha256(manifest).hexdigest() != checkpoint.manifest.digest:
        raise BuildError(f"--bake-checkpoint: {redact_url(url)} changed while it was fetched; try again")
    files = {rel: checkpoint.path / rel for rel in checkpoint.manifest.files}
    return BakedCheckpoint(
        ref.checkpoint,
        checkpoint.version,
        checkpoint.manifest.digest,
        files,
        manifest,
        _model_format(files.get(MODEL_FILE), f"--bake-checkpoint: version {checkpoint.version}"),
    )


def _model_format(descriptor: Path | None, where: str) -> str:
    """The ``format`` a version's model descriptor names ("savedmodel" without one)."""
    if descriptor is None:
        return "savedmodel"
    try:
        model_format = json.loads(descriptor.read_bytes()).get("format")
    except (OSError, ValueError, AttributeError) as exc:
        raise BuildError(f"{where}: {MODEL_FILE} cannot be read: {exc}") from None
    if not isinstance(model_format, str) or not model_format:
        raise BuildError(f"{where}: {MODEL_FILE} names no model format")
    return model_format

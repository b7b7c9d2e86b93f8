"""Environment settings: where checkpoints live, where they are cached, how the server binds.

One source of truth per setting. Precedence: command-line flag > environment variable >
``fn.toml`` > default. Settings are data: a frozen dataclass built from explicit mappings.

    # fn.toml
    [store]
    root = "file://.fnserve/store"     # any fsspec URL; relative file paths are project-relative
    cache = ".fnserve/cache"
    [serve]
    host = "127.0.0.1"
    port = 8080
    event_loop = "uvloop"               # or "asyncio"
    [build]
    registry = "registry.example.com/team"   # `fn build --push` pushes there; empty: no registry
    base_image = "fnserve/base:bookworm"     # made offline by `fn base-image`
    [gateway]
    port = 8080                              # `fn gateway` binds host:port (host 127.0.0.1)
    target = "local"                         # where `fn deploy` runs replicas: local, docker, k8s
    auth = "open"                            # prediction routes: open, or "token" like the admin API

Containers get the store's fsspec options as JSON in ``FNSERVE_STORE_OPTIONS``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "FNSERVE_"
# host[:port][/path] of a registry, no scheme: what `docker push` accepts before the image name.
_REGISTRY_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9._-]+)*$")
# [registry/]path[:tag] of an image, as Docker spells references (no digests for a base image).
_IMAGE_RE = re.compile(r"^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")


@dataclass(frozen=True)
class Settings:
    project_dir: Path  # folder holding fn.toml and functions/
    store: str  # fsspec URL of the checkpoint store root
    cache_dir: Path  # local cache of fetched checkpoints
    host: str  # serve binds here; loopback unless told otherwise
    port: int
    max_body_bytes: int  # request bodies larger than this (after inflation) get 413
    reload_interval_s: float  # how often `latest` checkpoints are polled for a newer version
    drain_timeout_s: float  # on SIGTERM, longest wait for in-flight requests
    event_loop: str = "uvloop"  # servers' event loop: "uvloop" (faster; measured) or "asyncio"
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # passed to fsspec
    registry: str = ""  # image registry `fn build --push` pushes to ("host[:port][/path]"); "" = none
    base_image: str = "fnserve/base:bookworm"  # local image every function image starts FROM
    debian_mirror: str = "http://deb.debian.org/debian"  # where `fn base-image` gets Debian packages
    gateway_host: str = "127.0.0.1"  # `fn gateway` binds here
    gateway_port: int = 8080
    gateway_url: str = ""  # where `fn deploy/status/...` reach the gateway; "" = http://host:port
    gateway_token: str = ""  # admin API bearer token; "" = generated once into .fnserve/gateway-token
    gateway_auth: str = "open"  # prediction routes: "open", or "token" (the admin token is required)
    gateway_target: str = "local"  # where replicas run: local, docker, k8s

    @classmethod
    def load(
        cls,
        project_dir: str | Path = ".",
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Read ``fn.toml`` in ``project_dir`` (if any), then environment, then overrides."""
        project = Path(project_dir).resolve()
        config_file = project / "fn.toml"
        config: dict[str, Any] = {}
        if config_file.is_file():
            try:
                config = tomllib.loads(config_file.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{config_file}: not valid TOML: {exc}") from None
        return cls.from_mapping(project, config, environ or {}, overrides or {})

    @classmethod
    def from_mapping(
        cls,
        project_dir: Path,
        config: Mapping[str, Any],
        environ: Mapping[str, str],
        overrides: Mapping[str, Any],
    ) -> Settings:
        store_cfg = _table(config, "store")
        serve_cfg = _table(config, "serve")
        build_cfg = _table(config, "build")
        gateway_cfg = _table(config, "gateway")

        def pick(
            key: str, table: Mapping[str, Any], default: Any, kind: type = str, *, toml_key: str = ""
        ) -> Any:
            toml_key = toml_key or key
            if overrides.get(key) is not None:
                value, source = overrides[key], f"--{key.replace('_', '-')}"
            elif environ.get(ENV_PREFIX + key.upper()):
                value, source = environ[ENV_PREFIX + key.upper()], ENV_PREFIX + key.upper()
            else:
                value, source = table.get(toml_key, default), f"fn.toml {toml_key}"
            problem = ValueError(f"setting {key} ({source}) must be {kind.__name__}, got {value!r}")
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise problem
            try:
                return kind(value)
            except ValueError:
                raise problem from None

        store = pick("store", store_cfg, ".fnserve/store", toml_key="root")
        cache = Path(pick("cache", store_cfg, ".fnserve/cache"))
        options = _storage_options(store_cfg, environ)
        settings = cls(
            project_dir=project_dir,
            store=_absolute_url(store, project_dir),
            cache_dir=cache if cache.is_absolute() else project_dir / cache,
            host=pick("host", serve_cfg, "127.0.0.1"),
            port=pick("port", serve_cfg, 8080, int),
            max_body_bytes=pick("max_body_bytes", serve_cfg, 64 * 1024 * 1024, int),
            reload_interval_s=pick("reload_interval_s", serve_cfg, 10.0, float),
            drain_timeout_s=pick("drain_timeout_s", serve_cfg, 20.0, float),
            event_loop=pick("event_loop", serve_cfg, "uvloop"),
            storage_options=dict(options),
            registry=pick("registry", build_cfg, "").rstrip("/"),
            base_image=pick("base_image", build_cfg, "fnserve/base:bookworm"),
            debian_mirror=pick("debian_mirror", build_cfg, "http://deb.debian.org/debian"),
            gateway_host=pick("gateway_host", gateway_cfg, "127.0.0.1", toml_key="host"),
            gateway_port=pick("gateway_port", gateway_cfg, 8080, int, toml_key="port"),
            gateway_url=pick("gateway_url", gateway_cfg, "", toml_key="url").rstrip("/"),
            gateway_token=pick("gateway_token", gateway_cfg, "", toml_key="token"),
            gateway_auth=pick("gateway_auth", gateway_cfg, "open", toml_key="auth"),
            gateway_target=pick("gateway_target", gateway_cfg, "local", toml_key="target"),
        )
        for key in ("port", "gateway_port"):
            if not 0 <= getattr(settings, key) <= 65535:
                raise ValueError(f"{key} {getattr(settings, key)} is out of range 0-65535")
        if settings.event_loop not in ("uvloop", "asyncio"):
            raise ValueError(f"setting event_loop must be 'uvloop' or 'asyncio', got {settings.event_loop!r}")
        if settings.gateway_auth not in ("open", "token"):
            raise ValueError(f"setting gateway auth must be 'open' or 'token', got {settings.gateway_auth!r}")
        if settings.gateway_url and not settings.gateway_url.startswith(("http://", "https://")):
            raise ValueError(f"setting gateway url {settings.gateway_url!r} must be an http(s):// URL")
        if settings.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if settings.reload_interval_s <= 0 or settings.drain_timeout_s < 0:
            raise ValueError("reload_interval_s must be positive and drain_timeout_s not negative")
        if settings.registry and not _REGISTRY_RE.match(settings.registry):
            raise ValueError(
                f"setting registry {settings.registry!r} must be host[:port][/path] without a scheme, "
                "e.g. registry.example.com:5000/team"
            )
        if not _IMAGE_RE.match(settings.base_image):
            raise ValueError(f"setting base_image {settings.base_image!r} is not an image reference")
        if not settings.debian_mirror.startswith(("http://", "https://", "file://")):
            raise ValueError(
                f"setting debian_mirror {settings.debian_mirror!r} must be an http(s):// or file:// URL"
            )
        return settings


def settings_here(environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    """The settings a command run in this folder serves with: ``flags`` (None: not given) over
    ``FNSERVE_*`` variables over ``./fn.toml`` over defaults. ``fn serve`` and
    ``python -m fnserve.runtime`` both build theirs here, so a replica started either way sees
    the same values. A ``ValueError`` names the bad setting and where it came from.

    >>> settings_here({"FNSERVE_PORT": "9000"}, port=None).port
    9000
    """
    return Settings.load(Path.cwd(), os.environ if environ is None else environ, flags)


def _storage_options(store_cfg: Mapping[str, Any], environ: Mapping[str, str]) -> Mapping[str, Any]:
    """fsspec options: ``FNSERVE_STORE_OPTIONS`` (a JSON object) over ``[store] options``."""
    text = environ.get(ENV_PREFIX + "STORE_OPTIONS")
    if text:
        try:
            options = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"setting store_options (FNSERVE_STORE_OPTIONS) is not JSON: {exc}") from None
        if not isinstance(options, dict):
            raise ValueError("setting store_options (FNSERVE_STORE_OPTIONS) must be a JSON object")
        return options
    options = store_cfg.get("options", {})
    if not isinstance(options, Mapping):
        raise ValueError("fn.toml: [store] options must be a table")
    return options


def _table(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"fn.toml: [{key}] must be a table")
    return value


def _absolute_url(url: str, project_dir: Path) -> str:
    """Plain or ``file://`` relative paths are taken relative to the project folder."""
    if "://" not in url:
        path = Path(url)
        return (path if path.is_absolute() else project_dir / path).as_uri()
    if url.startswith("file://") and not url.startswith("file:///"):
        return (project_dir / url[len("file://") :]).resolve().as_uri()
    return url

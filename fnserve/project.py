"""The project on disk and its settings: one door for everything above the runtime.

A project is a folder::

    fn.toml                     environment settings (store, serve, build, gateway, docker, k8s)
    functions/<name>/           one function each: predict.py, train.py, requirements.txt, function.toml
    .fnserve/                   local state: store, cache, gateway token, deployment state

Settings come from one reader with one precedence rule, **flag > environment variable > fn.toml >
default** (:class:`Layers`), whichever command or target asks: ``fn serve``, ``fn build``,
``fn deploy``, ``fn train``, the gateway and the docker and k8s targets all read through here.

    settings = load_settings(Path.cwd(), os.environ, {"port": 9000})   # flags as a mapping
    settings.port, settings.gateway_port, settings.registry
    function_dir(settings.project_dir, "recs")                         # checks the name first

Function names follow one rule (:func:`check_name`): the runtime serves ``/function/<name>``, the
gateway routes it, images are ``fnserve/<name>``, Kubernetes labels carry it. The gateway, ``fn new``
and the deploy targets must refuse exactly what the runtime refuses, so the rule is the runtime's.

Why some of this lives in :mod:`fnserve.runtime` and is only re-exported here: the runtime imports
nothing outside :mod:`fnserve.runtime` (it runs inside slim images, which install only its
dependencies), yet it needs the precedence rule for its own settings, the name rule for
``@predict``, the default port and the error root. Those are defined there once
(:mod:`fnserve.runtime.config`, :mod:`fnserve.runtime.spec`, :mod:`fnserve.runtime.errors`);
code above the runtime imports them from this module.

>>> check_name("function name", "fare-v2")
'fare-v2'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnserve.runtime.config import (
    CONFIG_FILE,
    DEFAULT_CACHE,
    DEFAULT_PORT,
    DEFAULT_STORE,
    ENV_PREFIX,
    FUNCTION_FILE,
    FUNCTIONS_DIR,
    Layers,
    read_config,
    read_toml,
    section,
)
from fnserve.runtime.errors import ConfigError, FnError
from fnserve.runtime.settings import Settings
from fnserve.runtime.spec import NAME_RE, NAME_RULE, check_name

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_CACHE",
    "DEFAULT_PORT",
    "DEFAULT_STORE",
    "ENV_PREFIX",
    "FUNCTIONS_DIR",
    "FUNCTION_FILE",
    "IMAGE_UID",
    "NAME_RE",
    "NAME_RULE",
    "STATE_DIR",
    "ConfigError",
    "FnError",
    "Layers",
    "ProjectSettings",
    "check_name",
    "function_dir",
    "function_names",
    "load_settings",
    "read_config",
    "read_toml",
    "section",
    "state_dir",
]

STATE_DIR = ".fnserve"  # local state under the project root (never sent to an image)
IMAGE_UID = 10001  # the fnserve user (and group) of every image fnserve builds

# host[:port][/path] of a registry, no scheme: what `docker push` accepts before the image name.
_REGISTRY_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9._-]+)*$")
# [registry/]path[:tag] of an image, as Docker spells references (no digests for a base image).
_IMAGE_RE = re.compile(r"^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")


def function_dir(project_dir: Path, name: str) -> Path:
    """``functions/<name>/`` of the project; a ``ValueError`` if ``name`` breaks the name rule."""
    return project_dir / FUNCTIONS_DIR / check_name("function name", name)


def function_names(project_dir: Path, marker: str = "predict.py") -> list[str]:
    """The functions of the project: the folders of ``functions/`` holding ``marker``."""
    found = (project_dir / FUNCTIONS_DIR).glob(f"*/{marker}")
    return sorted(p.parent.name for p in found if not p.parent.name.startswith("."))


def state_dir(project_dir: Path, *parts: str) -> Path:
    """A path under the project's ``.fnserve/``: ``state_dir(root, "gateway-token")``."""
    return project_dir.joinpath(STATE_DIR, *parts)


@dataclass(frozen=True, repr=False)  # Settings.__repr__ masks the credentials
class ProjectSettings(Settings):
    """The runtime's settings plus what builds, the gateway and ``fn deploy`` need.

    # fn.toml
    [build]
    registry = "registry.example.com/team"   # `fn build --push` pushes there; empty: no registry
    base_image = "fnserve/base:bookworm"     # made offline by `fn base-image`
    [gateway]
    port = 8080                              # `fn gateway` binds host:port (host 127.0.0.1)
    target = "local"                         # where `fn deploy` runs replicas: local, docker, k8s
    auth = "open"                            # prediction routes: open, or "token" like the admin API
    """

    registry: str = ""  # image registry `fn build --push` pushes to ("host[:port][/path]"); "" = none
    base_image: str = "fnserve/base:bookworm"  # local image every function image starts FROM
    debian_mirror: str = "http://deb.debian.org/debian"  # where `fn base-image` gets Debian packages
    gateway_host: str = "127.0.0.1"  # `fn gateway` binds here
    gateway_port: int = DEFAULT_PORT
    gateway_url: str = ""  # where `fn deploy/status/...` reach the gateway; "" = http://host:port
    gateway_token: str = ""  # admin API bearer token; "" = generated once into .fnserve/gateway-token
    gateway_auth: str = "open"  # prediction routes: "open", or "token" (the admin token is required)
    gateway_target: str = "local"  # where replicas run: local, docker, k8s

    _URL_FIELDS = ("store", "gateway_url")
    _TOKEN_FIELDS = ("gateway_token",)

    @classmethod
    def fields_from(cls, project_dir: Path, layers: Layers) -> dict[str, Any]:
        layers.table("build"), layers.table("gateway")  # malformed tables are errors even when unused
        build = {
            "registry": layers.pick("registry", "", section="build").rstrip("/"),
            "base_image": layers.pick("base_image", cls.base_image, section="build"),
            "debian_mirror": layers.pick("debian_mirror", cls.debian_mirror, section="build"),
        }

        def gateway(key: str, default: Any, kind: type = str) -> Any:
            return layers.pick(f"gateway_{key}", default, section="gateway", toml_key=key, kind=kind)

        fields = {
            **super().fields_from(project_dir, layers),
            **build,
            "gateway_host": gateway("host", cls.gateway_host),
            "gateway_port": gateway("port", DEFAULT_PORT, int),
            "gateway_url": gateway("url", "").rstrip("/"),
            "gateway_token": gateway("token", ""),
            "gateway_auth": gateway("auth", "open"),
            "gateway_target": gateway("target", "local"),
        }
        _check_project_fields(fields)
        return fields


def load_settings(
    project_dir: str | Path = ".",
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> ProjectSettings:
    """The project's settings: ``flags`` (``None`` values: not given) > ``environ`` > ``fn.toml`` > defaults.

    >>> load_settings("/nonexistent", {"FNSERVE_PORT": "9000"}, {"gateway_port": 9001}).port
    9000
    """
    return ProjectSettings.load(project_dir, environ, flags)


def _check_project_fields(fields: Mapping[str, Any]) -> None:
    if not 0 <= fields["gateway_port"] <= 65535:
        raise ConfigError(f"gateway_port {fields['gateway_port']} is out of range 0-65535")
    if fields["gateway_auth"] not in ("open", "token"):
        raise ConfigError(f"setting gateway auth must be 'open' or 'token', got {fields['gateway_auth']!r}")
    url = fields["gateway_url"]
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"setting gateway url {url!r} must be an http(s):// URL")
    if fields["registry"] and not _REGISTRY_RE.match(fields["registry"]):
        raise ConfigError(
            f"setting registry {fields['registry']!r} must be host[:port][/path] without a scheme, "
            "e.g. registry.example.com:5000/team"
        )
    if not _IMAGE_RE.match(fields["base_image"]):
        raise ConfigError(f"setting base_image {fields['base_image']!r} is not an image reference")
    if not fields["debian_mirror"].startswith(("http://", "https://", "file://")):
        raise ConfigError(
            f"setting debian_mirror {fields['debian_mirror']!r} must be an http(s):// or file:// URL"
        )

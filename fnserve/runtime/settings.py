"""The runtime's settings: where checkpoints live, where they are cached, how the server binds.

Chosen by the one precedence rule of :mod:`fnserve.runtime.config` (flag > environment variable
> ``fn.toml`` > default). Settings are data: a frozen dataclass built from explicit mappings.
Only what the runtime itself uses is here; builds, the gateway and the targets add theirs in
:class:`fnserve.project.ProjectSettings`.

    # fn.toml
    [store]
    root = "file://.fnserve/store"     # any fsspec URL; relative file paths are project-relative
    cache = ".fnserve/cache"
    [serve]
    host = "127.0.0.1"
    port = 8080
    event_loop = "uvloop"               # or "asyncio"
    lone_call_max_ms = 1.0              # a lone request's short model call runs on the loop (0: never)

Containers get the store's fsspec options as JSON in ``FNSERVE_STORE_OPTIONS``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from fnserve.runtime.asynccalls.settings import AsyncSettings
from fnserve.runtime.config import DEFAULT_CACHE, DEFAULT_PORT, DEFAULT_STORE, ENV_PREFIX, Layers, read_config
from fnserve.runtime.errors import ConfigError
from fnserve.runtime.redact import MASK, redact_mapping, redact_url, secret_values


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
    # a lone request whose model call is measured this short runs on the event loop's own turn
    # (no hand-off to the model thread and back; see fnserve.runtime.batcher); 0 turns it off
    lone_call_max_ms: float = 1.0
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # passed to fsspec
    async_calls: AsyncSettings = dataclasses.field(default_factory=AsyncSettings)  # [async]: its module

    @classmethod
    def load(
        cls,
        project_dir: str | Path = ".",
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Self:
        """Read ``fn.toml`` in ``project_dir`` (if any), then environment, then overrides."""
        project = Path(project_dir).resolve()
        return cls.from_mapping(project, read_config(project), environ or {}, overrides or {})

    @classmethod
    def from_mapping(
        cls,
        project_dir: Path,
        config: Mapping[str, Any],
        environ: Mapping[str, str],
        overrides: Mapping[str, Any],
    ) -> Self:
        """The settings of ``project_dir`` from a parsed ``fn.toml``, the environment and flags."""
        return cls(**cls.fields_from(project_dir, Layers(overrides, environ, config)))

    @classmethod
    def fields_from(cls, project_dir: Path, layers: Layers) -> dict[str, Any]:
        """The runtime's fields, checked (subclasses add theirs to these)."""
        layers.table("store"), layers.table("serve")  # a malformed table is an error even when unused
        store = layers.pick("store", DEFAULT_STORE, section="store", toml_key="root")
        cache = Path(layers.pick("cache", DEFAULT_CACHE, section="store"))
        fields: dict[str, Any] = {
            "project_dir": project_dir,
            "store": _absolute_url(store, project_dir),
            "cache_dir": cache if cache.is_absolute() else project_dir / cache,
            "host": layers.pick("host", "127.0.0.1", section="serve"),
            "port": layers.pick("port", DEFAULT_PORT, section="serve", kind=int),
            "max_body_bytes": layers.pick("max_body_bytes", 64 * 1024 * 1024, section="serve", kind=int),
            "reload_interval_s": layers.pick("reload_interval_s", 10.0, section="serve", kind=float),
            "drain_timeout_s": layers.pick("drain_timeout_s", 20.0, section="serve", kind=float),
            "event_loop": layers.pick("event_loop", "uvloop", section="serve"),
            "lone_call_max_ms": layers.pick("lone_call_max_ms", 1.0, section="serve", kind=float),
            "storage_options": dict(_storage_options(layers)),
        }
        fields["async_calls"] = AsyncSettings.from_layers(layers)
        if not 0 <= fields["port"] <= 65535:
            raise ConfigError(f"port {fields['port']} is out of range 0-65535")
        if fields["event_loop"] not in ("uvloop", "asyncio"):
            raise ConfigError(
                f"setting event_loop must be 'uvloop' or 'asyncio', got {fields['event_loop']!r}"
            )
        if not 0 <= fields["lone_call_max_ms"] <= 100:
            raise ConfigError(
                f"setting lone_call_max_ms must be 0-100 ms, got {fields['lone_call_max_ms']!r}"
            )
        if fields["max_body_bytes"] < 1:
            raise ConfigError("max_body_bytes must be positive")
        if fields["reload_interval_s"] <= 0 or fields["drain_timeout_s"] < 0:
            raise ConfigError("reload_interval_s must be positive and drain_timeout_s not negative")
        return fields

    # Fields whose values are credentials or may carry them, masked by __repr__ (subclasses add theirs).
    _URL_FIELDS: ClassVar[tuple[str, ...]] = ("store",)
    _TOKEN_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        """As a traceback or a debug line may show it: the store's credentials and tokens masked."""
        shown: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["storage_options"] = redact_mapping(self.storage_options)
        shown.update({key: redact_url(shown[key]) for key in self._URL_FIELDS})
        shown.update({key: MASK if shown[key] else "" for key in self._TOKEN_FIELDS})
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in shown.items())})"

    def secrets(self) -> frozenset[str]:
        """The values no output may show: the credentials in URL fields or the store's options,
        and tokens."""
        urls = [getattr(self, key) for key in self._URL_FIELDS]
        found = secret_values(*urls, options=self.storage_options)
        return found | {token for key in self._TOKEN_FIELDS if (token := getattr(self, key))}


def settings_here(environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    """The settings a command run in this folder serves with: ``flags`` (None: not given) over
    ``FNSERVE_*`` variables over ``./fn.toml`` over defaults. ``fn serve`` and
    ``python -m fnserve.runtime`` both build theirs here, so a replica started either way sees
    the same values. A ``ValueError`` names the bad setting and where it came from.

    >>> settings_here({"FNSERVE_PORT": "9000"}, port=None).port
    9000
    """
    return Settings.load(Path.cwd(), os.environ if environ is None else environ, flags)


def _storage_options(layers: Layers) -> Mapping[str, Any]:
    """fsspec options: ``FNSERVE_STORE_OPTIONS`` (a JSON object) over ``[store] options``."""
    text = layers.environ.get(ENV_PREFIX + "STORE_OPTIONS")
    if text:
        try:
            options = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"setting store_options (FNSERVE_STORE_OPTIONS) is not JSON: {exc}") from None
        if not isinstance(options, dict):
            raise ConfigError("setting store_options (FNSERVE_STORE_OPTIONS) must be a JSON object")
        return options
    options = layers.table("store").get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError("fn.toml: [store] options must be a table")
    return options


def _absolute_url(url: str, project_dir: Path) -> str:
    """Plain or ``file://`` relative paths are taken relative to the project folder."""
    if "://" not in url:
        path = Path(url)
        return (path if path.is_absolute() else project_dir / path).as_uri()
    if url.startswith("file://") and not url.startswith("file:///"):
        return (project_dir / url[len("file://") :]).resolve().as_uri()
    return url

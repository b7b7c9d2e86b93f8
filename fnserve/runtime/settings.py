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
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "FNSERVE_"


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
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # passed to fsspec

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
        options = store_cfg.get("options", {})
        if not isinstance(options, Mapping):
            raise ValueError("fn.toml: [store] options must be a table")
        settings = cls(
            project_dir=project_dir,
            store=_absolute_url(store, project_dir),
            cache_dir=cache if cache.is_absolute() else project_dir / cache,
            host=pick("host", serve_cfg, "127.0.0.1"),
            port=pick("port", serve_cfg, 8080, int),
            max_body_bytes=pick("max_body_bytes", serve_cfg, 64 * 1024 * 1024, int),
            reload_interval_s=pick("reload_interval_s", serve_cfg, 10.0, float),
            drain_timeout_s=pick("drain_timeout_s", serve_cfg, 20.0, float),
            storage_options=dict(options),
        )
        if not 0 <= settings.port <= 65535:
            raise ValueError(f"port {settings.port} is out of range 0-65535")
        if settings.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if settings.reload_interval_s <= 0 or settings.drain_timeout_s < 0:
            raise ValueError("reload_interval_s must be positive and drain_timeout_s not negative")
        return settings


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

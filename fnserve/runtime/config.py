"""The one reader of ``fn.toml`` and the environment, and the one precedence rule:

    command-line flag  >  environment variable  >  fn.toml  >  default

Every setting of every layer (the runtime's, the builds', the gateway's, the targets') is chosen
by :meth:`Layers.pick`, so ``--port``, ``FNSERVE_PORT`` and ``[serve] port`` can never disagree
about which one wins. An empty environment variable counts as unset, like a flag not given.

>>> layers = Layers(flags={"port": None}, environ={"FNSERVE_PORT": "9000"}, config={"serve": {"port": 7000}})
>>> layers.pick("port", DEFAULT_PORT, section="serve", kind=int)
9000
>>> layers.source("port", section="serve")
'FNSERVE_PORT'

This lives in the runtime because the runtime imports nothing outside :mod:`fnserve.runtime` (it
runs inside slim images); everything else reaches it through :mod:`fnserve.project`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnserve.runtime.errors import ConfigError

CONFIG_FILE = "fn.toml"  # at the project root
FUNCTION_FILE = "function.toml"  # a function's own settings, beside its predict.py
ENV_PREFIX = "FNSERVE_"  # FNSERVE_<KEY> is the environment's name for the setting <key>
FUNCTIONS_DIR = "functions"  # functions/<name>/ under the project root: what serve finds by default
DEFAULT_PORT = 8080  # what the runtime and the gateway listen on, in and out of containers
DEFAULT_STORE = ".fnserve/store"  # project-relative
DEFAULT_CACHE = ".fnserve/cache"  # project-relative


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; ``{}`` when there is no such file, a :class:`ConfigError` when it is bad."""
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def function_section(predict_file: Path, name: str) -> tuple[Mapping[str, Any], str]:
    """The ``[name]`` table of the ``function.toml`` beside ``predict_file`` (``{}`` without one)
    and where it is, ``"functions/recs/function.toml: [monitor]"``, for messages naming its keys.
    Every runtime part that has a section there (``[monitor]``: monitoring and payload capture)
    reads it here."""
    path = predict_file.parent / FUNCTION_FILE
    table = read_toml(path).get(name, {})
    where = f"{path}: [{name}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    return table, where


def read_config(project_dir: Path) -> dict[str, Any]:
    """The project's ``fn.toml`` (``{}`` when it has none)."""
    return read_toml(project_dir / CONFIG_FILE)


def section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The ``[name]`` table of a parsed ``fn.toml`` (``{}`` when absent)."""
    value = config.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{CONFIG_FILE}: [{name}] must be a table")
    return value


@dataclass(frozen=True)
class Layers:
    """Where settings come from, highest first: flags, the environment, ``fn.toml``.

    A setting ``key`` is the flag ``flags[key]``, the variable ``FNSERVE_<KEY>`` and the entry
    ``toml_key`` (default: ``key``) of the ``[section]`` table."""

    flags: Mapping[str, Any]
    environ: Mapping[str, str]
    config: Mapping[str, Any]  # the parsed fn.toml

    @classmethod
    def read(
        cls, project_dir: Path, environ: Mapping[str, str], flags: Mapping[str, Any] | None = None
    ) -> Layers:
        """The layers of the project in ``project_dir``: its ``fn.toml`` is read here, once."""
        return cls(flags or {}, environ, read_config(project_dir))

    def source(self, key: str, *, section: str, toml_key: str = "") -> str:
        """Which layer decides ``key``: ``--key``, ``FNSERVE_KEY``, ``fn.toml [section] key``, or
        ``default``."""
        env = ENV_PREFIX + key.upper()
        if self.flags.get(key) is not None:
            return f"--{key.replace('_', '-')}"
        if self.environ.get(env):
            return env
        if (toml_key or key) in self.table(section):
            return f"{CONFIG_FILE} [{section}] {toml_key or key}"
        return "default"

    def raw(self, key: str, default: Any, *, section: str, toml_key: str = "") -> tuple[Any, str]:
        """The value that wins for ``key``, unconverted, and where it came from."""
        where = self.source(key, section=section, toml_key=toml_key)
        if where.startswith("--"):
            return self.flags[key], where
        if where.startswith(ENV_PREFIX):
            return self.environ[where], where
        if where == "default":
            return default, where
        return self.table(section)[toml_key or key], where

    def pick(self, key: str, default: Any, *, section: str, toml_key: str = "", kind: type = str) -> Any:
        """The value of ``key`` by the precedence rule, as ``kind``; a :class:`ConfigError` names
        the setting and the layer it came from when the value is not a ``kind``."""
        value, where = self.raw(key, default, section=section, toml_key=toml_key)
        problem = ConfigError(f"setting {key} ({where}) must be {kind.__name__}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise problem
        if kind is str and not isinstance(value, str):  # `registry = 5` is a slip, not a name
            raise problem
        try:
            return kind(value)
        except ValueError:
            raise problem from None

    def table(self, name: str) -> Mapping[str, Any]:
        return section(self.config, name)

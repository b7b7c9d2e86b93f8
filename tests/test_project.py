"""One precedence rule for every setting: flag > environment variable > fn.toml > default.

Each layer gets its own test, over settings of different owners (the runtime's, a build's, the
gateway's, the docker and k8s targets'), so that a reader of its own that orders the layers
differently fails here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fnserve.docker.replicas import DockerSettings
from fnserve.k8s.project import load_k8s_settings
from fnserve.project import ConfigError, Layers, ProjectSettings, function_dir, load_settings
from fnserve.runtime.errors import FnError
from fnserve.runtime.settings import Settings

Read = Callable[[Path, dict[str, str], dict[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class Case:
    """One setting: how to read it, its name in each layer, a value for each, and its default."""

    read: Read
    toml: str  # "[section]\nkey = "
    env: str
    flag: str | None  # None: the setting has no flag
    values: tuple[Any, Any, Any]  # file, env, flag
    default: Any

    def file_text(self) -> str:
        value = self.values[0]
        return self.toml + (f'"{value}"' if isinstance(value, str) else str(value)) + "\n"


def project_field(name: str) -> Read:
    return lambda root, env, flags: getattr(load_settings(root, env, flags), name)


CASES = {
    "port": Case(project_field("port"), "[serve]\nport = ", "FNSERVE_PORT", "port", (7001, 7002, 7003), 8080),
    "store": Case(
        project_field("store"), "[store]\nroot = ", "FNSERVE_STORE", "store",
        ("memory://file", "memory://env", "memory://flag"), None,
    ),
    "registry": Case(
        project_field("registry"), "[build]\nregistry = ", "FNSERVE_REGISTRY", "registry",
        ("file.example", "env.example", "flag.example"), "",
    ),
    "gateway_port": Case(
        project_field("gateway_port"), "[gateway]\nport = ", "FNSERVE_GATEWAY_PORT", "gateway_port",
        (9001, 9002, 9003), 8080,
    ),
    "k8s namespace": Case(
        lambda root, env, flags: load_k8s_settings(root, env, flags).namespace,
        "[k8s]\nnamespace = ", "FNSERVE_K8S_NAMESPACE", "namespace", ("file", "env", "flag"), "",
    ),
    "docker network": Case(
        lambda root, env, flags: DockerSettings.load(root, env).network,
        "[docker]\nnetwork = ", "FNSERVE_DOCKER_NETWORK", None, ("file", "env", "flag"), "fnserve",
    ),
}  # fmt: skip
WITH_FLAGS = [name for name, case in CASES.items() if case.flag]


def read(case: Case, root: Path, *, file: bool = False, env: bool = False, flag: bool = False) -> Any:
    if file:
        (root / "fn.toml").write_text(case.file_text())
    environ = {case.env: str(case.values[1])} if env else {}
    flags = {case.flag: case.values[2]} if flag and case.flag else {}
    return case.read(root, environ, flags)


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n].default is not None])
def test_the_default_when_no_layer_sets_it(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    assert read(case, tmp_path) == case.default
    assert case.read(tmp_path, {case.env: ""}, {}) == case.default  # an empty variable is unset


@pytest.mark.parametrize("name", list(CASES))
def test_fn_toml_beats_the_default(tmp_path: Path, name: str) -> None:
    assert read(CASES[name], tmp_path, file=True) == CASES[name].values[0]


@pytest.mark.parametrize("name", list(CASES))
def test_the_environment_beats_fn_toml(tmp_path: Path, name: str) -> None:
    assert read(CASES[name], tmp_path, file=True, env=True) == CASES[name].values[1]


@pytest.mark.parametrize("name", WITH_FLAGS)
def test_a_flag_beats_the_environment(tmp_path: Path, name: str) -> None:
    assert read(CASES[name], tmp_path, file=True, env=True, flag=True) == CASES[name].values[2]
    assert CASES[name].read(tmp_path, {}, {CASES[name].flag: None}) == CASES[name].values[0]  # not given


def test_layers_say_where_a_setting_came_from() -> None:
    layers = Layers({"port": 1}, {"FNSERVE_HOST": "h"}, {"serve": {"event_loop": "asyncio"}})
    where = {key: layers.source(key, section="serve") for key in ("port", "host", "event_loop", "drain")}
    assert where == {
        "port": "--port",
        "host": "FNSERVE_HOST",
        "event_loop": "fn.toml [serve] event_loop",
        "drain": "default",
    }
    with pytest.raises(ConfigError, match=r"setting port \(FNSERVE_PORT\) must be int, got 'x'"):
        Layers({}, {"FNSERVE_PORT": "x"}, {}).pick("port", 8080, section="serve", kind=int)


def test_the_runtime_settings_hold_only_the_runtime_fields() -> None:
    runtime = {f.name for f in dataclasses.fields(Settings)}
    assert not {n for n in runtime if n.startswith("gateway_")} | ({"registry", "base_image"} & runtime)
    project = {f.name for f in dataclasses.fields(ProjectSettings)}
    assert runtime < project and {"registry", "gateway_port", "gateway_target"} <= project


def test_a_bad_setting_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "fn.toml").write_text("[k8s]\nnamespace = 5\n")
    with pytest.raises(ConfigError, match=r"k8s_namespace \(fn.toml \[k8s\] namespace\) must be str") as bad:
        load_k8s_settings(tmp_path, {}, {})
    assert isinstance(bad.value, FnError) and isinstance(bad.value, ValueError)
    (tmp_path / "fn.toml").write_text("[serve\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path, {}, {})


def test_function_folders_follow_the_name_rule(tmp_path: Path) -> None:
    assert function_dir(tmp_path, "recs") == tmp_path / "functions" / "recs"
    with pytest.raises(ValueError, match=r"'\.\./etc' is not a valid name"):
        function_dir(tmp_path, "../etc")

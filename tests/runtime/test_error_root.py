"""One error root: every exception class fnserve defines derives from FnError and has its HTTP
status, and the CLI turns any of them into one line (no traceback)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import click
import pytest

import fnserve
from fnserve.cli.common import user_errors
from fnserve.runtime.errors import FnError

# The client's error is an answer it received: its ``status`` is the server's (0: unreachable).
OUTSIDE = {"fnserve.client.core.ClientError"}


def fnserve_exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for module in pkgutil.walk_packages(fnserve.__path__, "fnserve."):
        if module.name.endswith(".__main__"):  # runs a command line when imported
            continue
        try:
            loaded = importlib.import_module(module.name)
        except ModuleNotFoundError as exc:  # an optional dependency (an extra) is not installed
            if (exc.name or "fnserve").startswith("fnserve"):
                raise
            continue
        for _, obj in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("fnserve."):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_fnserve_error_derives_from_fn_error_with_a_status() -> None:
    found = fnserve_exceptions()
    assert {
        "fnserve.images.BuildError",
        "fnserve.docker_engine.EngineError",
        "fnserve.deploy.DeployFailed",
    } <= set(found)
    outside = {name for name, cls in found.items() if not issubclass(cls, FnError)}
    assert outside == OUTSIDE
    statuses = {name: cls.status for name, cls in found.items() if issubclass(cls, FnError)}
    assert all(isinstance(s, int) and 400 <= s <= 599 for s in statuses.values()), statuses


@pytest.mark.parametrize(
    "error",
    [
        "fnserve.images.BuildError",
        "fnserve.gateway.platform.PlatformError",
        "fnserve.gateway.split.SplitError",
    ],
)
def test_the_cli_shows_any_of_them_as_one_line(error: str) -> None:
    module, name = error.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)

    @user_errors
    def command() -> None:
        raise cls("the registry refused the push: log in first")

    with pytest.raises(click.ClickException) as shown:
        command()
    assert shown.value.message == "the registry refused the push: log in first"

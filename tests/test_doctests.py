"""The examples in the package's docstrings run and say what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fnserve

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(fnserve.__path__, "fnserve.")
    if m.name != "fnserve.cli" and not m.name.startswith("fnserve.cli.")  # the CLI registers on import
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0

"""The examples in the package's docstrings run and say what they show.

One test item per module that has examples; a module without any yields none (an item that
checks nothing would only pad the count).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import fnserve

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[ModuleType]:
    names = sorted(
        m.name
        for m in pkgutil.walk_packages(fnserve.__path__, "fnserve.")
        if m.name != "fnserve.cli" and not m.name.startswith("fnserve.cli.")  # the CLI registers on import
    )
    return [importlib.import_module(name) for name in names]


def _examples(module: ModuleType) -> list[doctest.DocTest]:
    """The module's docstrings with at least one example that runs (``+SKIP`` ones only show)."""
    found = doctest.DocTestFinder().find(module)
    return [t for t in found if any(not e.options.get(doctest.SKIP) for e in t.examples)]


WITH_EXAMPLES = [m for m in _modules() if _examples(m)]


@pytest.mark.parametrize("module", WITH_EXAMPLES, ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_examples_are_found() -> None:
    """The finder sees the package's examples at all (a broken finder would pass every module)."""
    names = {m.__name__ for m in WITH_EXAMPLES}
    assert {"fnserve.gateway.targets", "fnserve.gateway.deployments"} <= names

"""``fn new NAME``: a new function folder from a template, ready for ``fn train`` and ``fn serve``.

    folder = create_function(Path("."), "fare", "python")
    # functions/fare/{predict.py, train.py, function.toml, requirements.txt, test_fare.py}

A template is a module of this package (:mod:`.python`, :mod:`.tensorflow`) whose ``FILES`` map
file names to texts with ``{{ name }}`` placeholders, rendered by substitution only (the
Dockerfile templates' :func:`~fnserve.images.templates.render`), so each reads as the file it
becomes. They are Python strings rather than files under ``fnserve/templates/`` because the wheel
ships only the Dockerfile templates as data, and a ``predict.py`` holding ``def {{ identifier }}(``
is no Python that ruff or mypy could read; the tests lint and run what they render instead.

>>> sorted(render_files("python", "fare-estimate"))[:3]
['function.toml', 'predict.py', 'requirements.txt']
>>> 'def fare_estimate(' in render_files("python", "fare-estimate")["predict.py"]
True
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import keyword
import os
import secrets
import shutil
from pathlib import Path

from fnserve.images.templates import render
from fnserve.project import FUNCTIONS_DIR, FnError, function_dir

TEMPLATES = ("tensorflow", "python")
# The lowercase module-level names of the templates' predict.py: a function named like one of them
# would shadow it, so its Python name gets a trailing underscore (the served name is unchanged).
_TAKEN = frozenset({"annotations", "json", "load", "np", "predict"})


class ScaffoldError(FnError):
    """The function cannot be created; the message says why. Nothing was written."""

    status = 400  # the caller's name or template


def default_template() -> str:
    """``tensorflow`` where TensorFlow is installed (the template its model needs), else ``python``."""
    return "tensorflow" if importlib.util.find_spec("tensorflow") is not None else "python"


def python_name(name: str) -> str:
    """The Python identifier of the function served as ``name``.

    >>> python_name("fare-estimate"), python_name("class"), python_name("recs")
    ('fare_estimate', 'class_', 'recs')
    """
    identifier = name.replace("-", "_")
    return identifier + "_" if keyword.iskeyword(identifier) or identifier in _TAKEN else identifier


def render_files(template: str, name: str) -> dict[str, str]:
    """The files of a new function ``name`` from ``template``: file name -> text."""
    if template not in TEMPLATES:
        raise ScaffoldError(f"unknown template {template!r}: known templates are {', '.join(TEMPLATES)}")
    files: dict[str, str] = importlib.import_module(f"fnserve.scaffold.{template}").FILES
    values = {"name": name, "identifier": python_name(name), "template": template}
    where = f"scaffold template {template!r}"
    return {
        render(path, values, where=where): render(text, values, where=where) for path, text in files.items()
    }


def create_function(project_dir: Path, name: str, template: str) -> Path:
    """Write ``functions/<name>/`` of the project from ``template``; return the folder.

    Refused, with nothing written: a name the runtime would not serve (the message says the
    rule), an existing folder or file of that name. The files are written into a hidden folder
    beside it, renamed into place once complete, so a failure leaves no half function behind.
    """
    try:
        folder = function_dir(project_dir, name)
    except ValueError as exc:
        raise ScaffoldError(str(exc)) from None
    files = render_files(template, name)  # every text is ready before anything is written
    _refuse_existing(folder, name)
    parent_existed = folder.parent.is_dir()
    staging = folder.parent / f".{name}.{secrets.token_hex(4)}.new"  # hidden: not a function yet
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for path, text in files.items():
            (staging / path).write_text(text)
        _refuse_existing(folder, name)  # made meanwhile: refused, not replaced
        os.rename(staging, folder)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not parent_existed:
            _remove_if_empty(folder.parent)
        if isinstance(exc, OSError):
            raise ScaffoldError(f"cannot write {FUNCTIONS_DIR}/{name}: {exc.strerror or exc}") from None
        raise
    return folder


def _refuse_existing(folder: Path, name: str) -> None:
    if folder.exists() or folder.is_symlink():
        raise ScaffoldError(
            f"{FUNCTIONS_DIR}/{name} already exists: fn new never writes into an existing folder; "
            "choose another name or remove it"
        )


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: someone else's files, left alone
        folder.rmdir()

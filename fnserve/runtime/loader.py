"""Find function files, import them, and collect what ``@predict`` marked.

    >>> found = discover(["functions"])          # every functions/*/predict.py
    >>> [f.spec.name for f in found]             # doctest: +SKIP
    ['recs', 'tagger']

Problems are reported at load time, naming the file and the function: a file that fails to
import, a bad signature or type, two functions with one name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnserve.runtime.errors import FunctionError
from fnserve.runtime.schema import Schema
from fnserve.runtime.spec import PredictSpec, spec_of

FUNCTION_FILE = "predict.py"


@dataclass(frozen=True)
class FoundFunction:
    """A marked function with its schema and the file it came from."""

    func: Callable[..., Any]
    spec: PredictSpec
    schema: Schema
    path: Path


def function_files(targets: Iterable[str | Path]) -> list[Path]:
    """Resolve CLI targets to predict files: a .py file, a function folder, or a folder of them."""
    files: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_file():
            files.append(path)
        elif (path / FUNCTION_FILE).is_file():
            files.append(path / FUNCTION_FILE)
        elif path.is_dir():
            # Hidden folders are never functions (no name may start with "."): `fn new` stages there.
            found = sorted(p for p in path.glob(f"*/{FUNCTION_FILE}") if not p.parent.name.startswith("."))
            if not found:
                raise FunctionError(f"{path}: no */{FUNCTION_FILE} found in this folder")
            files.extend(found)
        else:
            raise FunctionError(f"{path}: no such file or folder")
    return [f.resolve() for f in files]


def load_file(path: Path) -> list[FoundFunction]:
    """Import one function file and return the functions it marks with ``@predict``."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"fnserve_user_{path.parent.name.replace('-', '_')}_{digest}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise FunctionError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[module_name] = module
    # The function's folder goes on sys.path so that helper modules beside predict.py import.
    sys.path.insert(0, str(path.parent))
    try:
        import_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        frames = traceback.extract_tb(exc.__traceback__)
        line = next((f.lineno for f in reversed(frames) if f.filename == str(path)), None)
        at = f"{path}:{line}" if line else str(path)
        raise FunctionError(f"{at}: importing the function file failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    found = []
    for attr, obj in vars(module).items():
        spec = spec_of(obj)
        if spec is None or getattr(obj, "__module__", None) != module_name:
            continue  # marked functions imported from elsewhere belong to their own file
        where = f"{path}: function {attr!r}"
        found.append(
            FoundFunction(
                obj, spec, Schema.from_function(obj, has_model=spec.loader is not None, where=where), path
            )
        )
    if not found:
        raise FunctionError(f"{path}: no function marked with @predict")
    return found


def discover(targets: Iterable[str | Path]) -> list[FoundFunction]:
    """Every marked function in the targets; duplicate names are an error, never an overwrite."""
    by_name: dict[str, FoundFunction] = {}
    for path in function_files(targets):
        for found in load_file(path):
            if found.spec.name in by_name:
                other = by_name[found.spec.name].path
                raise FunctionError(
                    f"function name {found.spec.name!r} is defined twice: in {other} and {path}"
                )
            by_name[found.spec.name] = found
    return list(by_name.values())

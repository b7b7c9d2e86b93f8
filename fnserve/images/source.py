"""What a build needs to know about ``functions/<name>/``, read without importing it.

The function's own dependencies may not be installed where the image is built (that is what
its image is for), so ``predict.py`` is parsed, not imported: the ``@predict`` options written
as literals give the checkpoint reference that the image's label records.

    functions/recs/predict.py          required: the function
    functions/recs/requirements.txt    optional: pip requirements of the image
    functions/recs/train.py            optional: `fn train recs [--in-container]`
    functions/recs/function.toml       optional: [build] template = "python"

>>> source = "@predict(loader=len, version=3)\\ndef recs(model, x: int) -> int: ..."
>>> refs = checkpoint_refs(source)
>>> [f"{r.checkpoint}@{r.version}" for r in refs]
['recs@3']
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from fnserve.images import BuildError
from fnserve.images.templates import DEFAULT_TEMPLATE
from fnserve.project import FUNCTION_FILE, ConfigError, function_dir, read_toml
from fnserve.project import function_names as project_functions

PREDICT_FILE = "predict.py"
REQUIREMENTS_FILE = "requirements.txt"
TRAIN_FILE = "train.py"
SETTINGS_FILE = FUNCTION_FILE


@dataclass(frozen=True)
class CheckpointRef:
    function: str  # the served name
    checkpoint: str  # name in the store or full URL; "?" when not a literal
    version: str  # "latest", a number, or "?"

    def __str__(self) -> str:
        return f"{self.checkpoint}@{self.version}"


@dataclass(frozen=True)
class FunctionSource:
    name: str  # the folder's name: the image is fnserve/<name>
    folder: Path
    template: str
    requirements: Path | None
    checkpoints: tuple[CheckpointRef, ...]  # one per @predict function that loads a checkpoint

    @property
    def trainable(self) -> bool:
        return (self.folder / TRAIN_FILE).is_file()


def find_function(project_dir: Path, name: str, template: str | None = None) -> FunctionSource:
    """``functions/<name>/`` of the project, checked; ``template`` overrides function.toml."""
    try:
        folder = function_dir(project_dir, name)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    predict_file = folder / PREDICT_FILE
    if not predict_file.is_file():
        known = function_names(project_dir)
        raise BuildError(
            f"no function {name!r}: expected {predict_file}"
            + (f" (functions here: {', '.join(known)})" if known else "")
        )
    requirements = folder / REQUIREMENTS_FILE
    try:
        refs = checkpoint_refs(predict_file.read_text())
    except SyntaxError as exc:
        raise BuildError(f"{predict_file}:{exc.lineno}: not valid Python: {exc.msg}") from None
    return FunctionSource(
        name=name,
        folder=folder,
        template=template or _template_setting(folder / SETTINGS_FILE),
        requirements=requirements if requirements.is_file() else None,
        checkpoints=tuple(refs),
    )


def function_names(project_dir: Path) -> list[str]:
    """Every function folder of the project (``functions/*/predict.py``)."""
    return project_functions(project_dir, PREDICT_FILE)


def checkpoint_refs(source: str) -> list[CheckpointRef]:
    """The checkpoint each ``@predict(loader=...)`` function of ``source`` loads."""
    refs = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if _dotted_name(target).rsplit(".", 1)[-1] != "predict":
                continue
            options = {kw.arg: kw.value for kw in (call.keywords if call else []) if kw.arg}
            if "loader" not in options:
                continue  # no loader: the function needs no checkpoint
            served = _literal(options.get("name"), node.name)
            checkpoint = _literal(options.get("checkpoint"), served)
            refs.append(CheckpointRef(served, checkpoint, _literal(options.get("version"), "latest")))
    return refs


def _template_setting(path: Path) -> str:
    try:
        table = read_toml(path).get("build", {})
    except ConfigError as exc:
        raise BuildError(exc.message) from None
    template = table.get("template", DEFAULT_TEMPLATE) if isinstance(table, dict) else None
    if not isinstance(template, str):
        raise BuildError(f'{path}: [build] template must be a template name, e.g. "python"')
    return template


def _dotted_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted_name(node.value)}.{node.attr}"
    return ""


def _literal(node: ast.expr | None, default: str) -> str:
    if node is None:
        return default
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return "?"  # computed at import time; the image's label cannot know it
    return default if value is None else str(value)

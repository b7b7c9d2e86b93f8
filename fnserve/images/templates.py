"""Dockerfile templates: ``fnserve/templates/<name>/Dockerfile`` plus ``template.toml``.

Rendering is substitution only: ``{{ name }}`` placeholders are replaced by values, with no
conditions or loops, so a template reads as the Dockerfile it becomes. A placeholder without a
value, or a value that would break the Dockerfile, is an error naming the template. Every template
gets :data:`FACTS` (``{{ uid }}`` of the image's user, ``{{ port }}`` its server listens on), so
those are written once, in :mod:`fnserve.project`, not in each Dockerfile.

>>> template = load_template("python")
>>> template.requirements
()
>>> render("FROM {{ base_image }}", {"base_image": "fnserve/base:bookworm"}, where="doc")
'FROM fnserve/base:bookworm'
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fnserve.images import BuildError
from fnserve.project import DEFAULT_PORT, IMAGE_UID

DEFAULT_TEMPLATE = "tensorflow"
IMAGE_TEMPLATES = ("gateway",)  # templates of fnserve's own images (kind = "gateway"), not functions'
FACTS = {"uid": str(IMAGE_UID), "port": str(DEFAULT_PORT)}  # values every template may use
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class FormatRule:
    """``[formats.<format>]`` of template.toml: the template's requirements for an image whose baked
    version is in that model format, and the packages left out of the function's requirements.txt.

    The tensorflow template's ``[formats.litert]`` is how an image of a LiteRT flatbuffer carries no
    TensorFlow (~1.3 GB): the runtime's LiteRT interpreter serves it.
    """

    requirements: tuple[str, ...]
    not_needed: frozenset[str]  # package names (normalised: lower case, "-" for "_" and ".")


@dataclass(frozen=True)
class Template:
    name: str
    dockerfile: str  # the template text, placeholders unreplaced
    description: str
    requirements: tuple[str, ...]  # pip requirements the template adds, in a layer of their own
    # A baked version whose model is in one of these formats needs other requirements (see FormatRule).
    formats: Mapping[str, FormatRule] = field(default_factory=dict)

    def rule_for(self, model_format: str | None) -> FormatRule | None:
        """What an image of a baked version in ``model_format`` needs instead, or None: the template's."""
        return self.formats.get(model_format) if model_format else None


def available_templates() -> list[str]:
    """Names of the function templates shipped in the package."""
    root = resources.files("fnserve") / "templates"
    return sorted(
        entry.name
        for entry in root.iterdir()
        if (entry / "Dockerfile").is_file() and entry.name not in IMAGE_TEMPLATES
    )


def load_template(name: str, *, kind: str = "function") -> Template:
    """Read a shipped template; an unknown name is an error listing the known ones.

    ``kind="gateway"`` reads the gateway image's template, which no function may use."""
    folder = resources.files("fnserve") / "templates" / name
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name) or not (folder / "Dockerfile").is_file():
        known = ", ".join(available_templates())
        raise BuildError(f"unknown template {name!r}: known templates are {known}")
    where = f"template {name!r} (template.toml)"
    try:
        manifest = tomllib.loads((folder / "template.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"{where}: cannot be read: {exc}") from None
    if manifest.get("kind", "function") != kind:
        known = ", ".join(available_templates())
        raise BuildError(f"template {name!r} is not a {kind} template; function templates are {known}")
    requirements = manifest.get("requirements", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise BuildError(f"{where}: requirements must be a list of strings")
    return Template(
        name=name,
        dockerfile=(folder / "Dockerfile").read_text(),
        description=str(manifest.get("description", "")),
        requirements=tuple(requirements),
        formats=_format_rules(manifest.get("formats", {}), where),
    )


def _format_rules(table: Any, where: str) -> dict[str, FormatRule]:
    if not isinstance(table, dict):
        raise BuildError(f"{where}: [formats] must be a table of model formats")
    rules = {}
    for model_format, rule in table.items():
        at = f"{where}: [formats.{model_format}]"
        if not isinstance(rule, dict) or set(rule) - {"requirements", "not_needed"}:
            raise BuildError(f"{at} takes only requirements and not_needed")
        requirements, not_needed = rule.get("requirements", []), rule.get("not_needed", [])
        for key, value in (("requirements", requirements), ("not_needed", not_needed)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BuildError(f"{at}: {key} must be a list of strings")
        rules[model_format] = FormatRule(tuple(requirements), frozenset(map(package_name, not_needed)))
    return rules


def package_name(requirement: str) -> str:
    """The normalised project name of a requirement line (PEP 503), "" for a comment or option.

    >>> package_name("TensorFlow_CPU==2.21.0  # pinned")
    'tensorflow-cpu'
    """
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement.split("#")[0])
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def placeholders(text: str) -> set[str]:
    """The placeholder names a template uses."""
    return set(_PLACEHOLDER.findall(text))


def render(text: str, values: Mapping[str, str], *, where: str) -> str:
    """Replace every ``{{ name }}`` by ``values[name]``; nothing else happens."""
    missing = sorted(placeholders(text) - set(values))
    if missing:
        raise BuildError(f"{where}: no value for placeholder(s) {', '.join(missing)}")
    for key, value in values.items():
        if any(c in value for c in "\n\r\"'\\ ") or "{{" in value:
            # Values are names, tags and paths: whitespace or quotes would change the Dockerfile's meaning.
            raise BuildError(f"{where}: value for {key} is not a plain word: {value!r}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)

"""The build plan: a function's image as data. Planning reads the files it lists (to hash them)
and nothing else: no engine, no network, no environment (the host's part comes in as BuildInputs).

    plan = plan_build(source, load_template(source.template), inputs, base_image="fnserve/base:bookworm")
    plan.image              # 'fnserve/recs:3f2a9c1b7d0e' (the tag is a hash of everything sent)
    plan.dockerfile         # the rendered template
    plan.files              # what the engine receives, path by path

The tag is the sha256 of the context (every file's name, mode and content) and the base
image's id, so the same sources give the same tag and an existing image is reused as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fnserve import __version__
from fnserve.images.context import (
    DEFAULT_IGNORE,
    ContextFile,
    IgnoreRule,
    context_digest,
    folder_files,
    parse_ignore,
)
from fnserve.images.inputs import BakedCheckpoint, BuildInputs
from fnserve.images.labels import (
    BAKED_LABEL,
    CHECKPOINT_LABEL,
    FNSERVE_VERSION_LABEL,
    FUNCTION_LABEL,
    MODEL_FORMAT_LABEL,
    PORT_LABEL,
    TEMPLATE_LABEL,
    TRAINABLE_LABEL,
)
from fnserve.images.source import FunctionSource
from fnserve.images.templates import FACTS, Template, package_name, render
from fnserve.project import DEFAULT_PORT
from fnserve.runtime.redact import redact_url

TAG_LENGTH = 12
CONTAINER_PORT = DEFAULT_PORT
BAKED_STORE = "/opt/fnserve-store"  # the image's own store with --bake-checkpoint (see the templates)
_CHECKPOINT_README = b"A checkpoint baked with `fn build --bake-checkpoint` goes here, as a store.\n"


@dataclass(frozen=True)
class BuildPlan:
    function: str  # the function folder's name
    template: str
    repository: str  # "fnserve/<name>"
    tag: str  # content hash, TAG_LENGTH hex digits
    digest: str  # the full content hash
    base_image: str
    dockerfile: str
    files: tuple[ContextFile, ...]  # the context, Dockerfile and .dockerignore included
    labels: MappingProxyType[str, str]
    checkpoint: str  # the checkpoint reference the label records (credentials masked)
    checkpoints: tuple[str, ...]  # names in the store of the checkpoints the function loads
    baked: bool

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def latest(self) -> str:
        return f"{self.repository}:latest"

    def remote(self, registry: str) -> tuple[str, str]:
        """The two references (content tag, latest) of this image in ``registry``."""
        return f"{registry}/{self.repository}:{self.tag}", f"{registry}/{self.repository}:latest"


def plan_build(
    source: FunctionSource, template: Template, inputs: BuildInputs, *, base_image: str
) -> BuildPlan:
    """Everything `fn build` sends to the engine, and the names and labels it asks for."""
    function_rules = _function_ignore(source.folder)
    baked_store = BAKED_STORE if inputs.baked else ""
    # A baked version's model format may need less than the template brings (LiteRT: no TensorFlow).
    rule = template.rule_for(inputs.baked.model_format if inputs.baked else None)
    template_requirements = rule.requirements if rule else template.requirements
    no_file = b"# the function has no requirements.txt\n"
    function_requirements = source.requirements.read_bytes() if source.requirements else no_file
    if rule:
        function_requirements = _without(function_requirements, rule.not_needed, inputs.baked)
    dockerfile = render(
        template.dockerfile,
        {**FACTS, "base_image": base_image, "function": source.name, "baked_store": baked_store},
        where=f"template {template.name!r}",
    )
    generated = [
        ContextFile("Dockerfile", dockerfile.encode()),
        ContextFile(".dockerignore", (DEFAULT_IGNORE + _rules_text(function_rules)).encode()),
        ContextFile("build/pip.conf", inputs.pip_config.encode()),
        ContextFile("build/ca-certificates.crt", inputs.ca_bundle),
        ContextFile("build/runtime-requirements.txt", _lines(inputs.runtime_requirements)),
        ContextFile("build/template-requirements.txt", _lines(template_requirements)),
        ContextFile("build/function-requirements.txt", function_requirements),
    ]
    files = [
        *generated,
        *_checkpoint_files(inputs),
        *folder_files(inputs.fnserve_package, "fnserve", parse_ignore(DEFAULT_IGNORE)),
        *folder_files(source.folder, "function", [*parse_ignore(DEFAULT_IGNORE), *function_rules]),
    ]
    extra = [
        f"base={base_image}@{inputs.base_image_id}",
        *(f"{k}={v}" for k, v in sorted(inputs.extra.items())),
    ]
    digest = context_digest(files, *extra)
    tag = digest[:TAG_LENGTH]
    baked = inputs.baked
    # Recorded in a label, which anyone who pulls the image reads: a checkpoint URL's
    # credentials stay out of it (the image is given its store at run time, never in it).
    checkpoint = (
        f"{baked.name}@{baked.version}"
        if baked
        else ",".join(f"{redact_url(ref.checkpoint)}@{ref.version}" for ref in source.checkpoints)
    )
    labels: dict[str, str] = {
        "org.opencontainers.image.title": f"fnserve/{source.name}",
        "org.opencontainers.image.description": f"fnserve function {source.name} ({template.name} template)",
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.revision": digest,
        "org.opencontainers.image.base.name": base_image,
        FUNCTION_LABEL: source.name,
        FNSERVE_VERSION_LABEL: __version__,
        TEMPLATE_LABEL: template.name,
        CHECKPOINT_LABEL: checkpoint or "none",
        # Without the template's framework (a LiteRT image) train.py cannot run in the image.
        TRAINABLE_LABEL: "true" if source.trainable and not rule else "false",
        PORT_LABEL: str(CONTAINER_PORT),
    }
    if baked:
        labels[BAKED_LABEL] = f"sha256:{baked.digest}"
        labels[MODEL_FORMAT_LABEL] = baked.model_format
    return BuildPlan(
        function=source.name,
        template=template.name,
        repository=f"fnserve/{source.name}",
        tag=tag,
        digest=digest,
        base_image=base_image,
        dockerfile=dockerfile,
        files=tuple(sorted(files, key=lambda f: f.path)),
        labels=MappingProxyType(labels),
        checkpoint=checkpoint or "none",
        checkpoints=tuple(ref.checkpoint for ref in source.checkpoints),
        baked=baked is not None,
    )


def _checkpoint_files(inputs: BuildInputs) -> list[ContextFile]:
    """The baked version as a one-version store (``checkpoint/<name>/<version>/...``), or a README."""
    files = [ContextFile("checkpoint/README", _CHECKPOINT_README)]
    baked = inputs.baked
    if baked:
        folder = f"checkpoint/{baked.name}/{baked.version}"
        files += [ContextFile(f"{folder}/{rel}", path) for rel, path in sorted(baked.files.items())]
        files.append(ContextFile(f"{folder}/fnserve-manifest.json", baked.manifest))
    return files


def function_files(folder: Path) -> list[ContextFile]:
    """The files of a function's folder as a build puts them in its image (under ``function/``):
    ours and the function's own .dockerignore rules applied. What ``fn batch`` fingerprints as the
    function's code, the same here and in the image."""
    return folder_files(folder, "function", [*parse_ignore(DEFAULT_IGNORE), *_function_ignore(folder)])


def _function_ignore(folder: Path) -> list[IgnoreRule]:
    """The function's own .dockerignore, its patterns taken relative to the function folder."""
    path = folder / ".dockerignore"
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            bang = "!" if line.startswith("!") else ""
            lines.append(f"{bang}function/{line.lstrip('!').strip().lstrip('/')}")
    return parse_ignore("\n".join(lines))


def _rules_text(rules: list[IgnoreRule]) -> str:
    return "".join(f"{rule.text}\n" for rule in rules) if rules else ""


def _without(requirements: bytes, not_needed: frozenset[str], baked: BakedCheckpoint | None) -> bytes:
    """requirements.txt with the lines naming ``not_needed`` packages turned into comments saying why."""
    kind = baked.model_format if baked else "this"
    lines = []
    for line in requirements.decode().splitlines():
        if package_name(line) in not_needed:
            line = f"# left out, a {kind} version does not need it: {line.strip()}"
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def _lines(items: Any) -> bytes:
    return "".join(f"{item}\n" for item in items).encode()

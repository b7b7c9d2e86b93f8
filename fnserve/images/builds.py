"""Build and push function images: plan (data), then the engine does it.

engine = DockerEngine.connect()
plan = prepare_build(settings, "recs", engine)           # reads the function and this host
result = build_image(plan, engine, on_output=print)      # reused when the tag exists already
push_image(plan, engine, settings.registry, on_output=print)
result = ensure_image(settings, "recs", engine, print)   # prepare + build: reused when unchanged
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fnserve.docker_engine import DockerEngine, ImageInfo
from fnserve.images import BuildError
from fnserve.images.base import create_base_image, plan_base
from fnserve.images.context import write_tar
from fnserve.images.inputs import fetch_baked_checkpoint, host_inputs
from fnserve.images.plan import BuildPlan, plan_build
from fnserve.images.source import find_function
from fnserve.images.templates import load_template
from fnserve.project import ProjectSettings

Output = Callable[[str], None]


@dataclass(frozen=True)
class BuildResult:
    plan: BuildPlan
    image: ImageInfo
    reused: bool  # an image with this content tag existed: nothing was built
    seconds: float


def ensure_base_image(settings: ProjectSettings, engine: DockerEngine, on_output: Output) -> ImageInfo:
    """The local base image; made offline (debootstrap) when missing, never pulled."""
    base = engine.image(settings.base_image)
    if base is None:
        on_output(f"base image {settings.base_image} is missing: making it offline from Debian packages")
        try:
            create_base_image(plan_base(settings.base_image, settings.debian_mirror), engine, on_output)
        except BuildError as exc:
            raise BuildError(
                f"base image {settings.base_image} is missing and `fn base-image` failed: {exc}"
            ) from None
        base = engine.image(settings.base_image)
        assert base is not None, "the import reported success"
    return base


def prepare_build(
    settings: ProjectSettings,
    name: str,
    engine: DockerEngine,
    *,
    template: str | None = None,
    bake: str | None = None,
    on_output: Output = lambda line: None,
) -> BuildPlan:
    """The plan for ``functions/<name>``: this host's inputs, the base image's id, a baked checkpoint.

    ``bake``: None builds an image that fetches its checkpoint at start; "" bakes the version the
    function asks for (resolved to a number); "3" bakes version 3.
    """
    source = find_function(settings.project_dir, name, template)
    base = ensure_base_image(settings, engine, on_output)
    baked = fetch_baked_checkpoint(settings, source, bake) if bake is not None else None
    inputs = host_inputs(base_image_id=base.id, baked=baked)
    return plan_build(source, load_template(source.template), inputs, base_image=settings.base_image)


def build_image(
    plan: BuildPlan, engine: DockerEngine, *, on_output: Output = lambda line: None, force: bool = False
) -> BuildResult:
    """Build ``plan.image`` unless it exists, then point ``:latest`` at it."""
    started = time.perf_counter()
    existing = None if force else engine.image(plan.image)
    if existing is None:
        with write_tar(plan.files) as context:
            image_id = engine.build(context, tag=plan.image, labels=plan.labels, on_output=on_output)
    else:
        image_id = existing.id
    engine.tag(image_id, plan.latest)
    info = engine.image(plan.image)
    if info is None:
        raise BuildError(f"the engine built {image_id[:19]} but has no image {plan.image}")
    return BuildResult(plan, info, reused=existing is not None, seconds=time.perf_counter() - started)


def push_image(plan: BuildPlan, engine: DockerEngine, registry: str, *, on_output: Output) -> list[str]:
    """Tag the built image for ``registry`` (content tag and latest) and push both."""
    if not registry:
        raise BuildError(
            "no registry configured: set [build] registry in fn.toml, FNSERVE_REGISTRY or --registry"
        )
    pushed = []
    for ref in plan.remote(registry):
        engine.tag(plan.image, ref)
        engine.push(ref, on_output=on_output)
        pushed.append(ref)
    return pushed


def ensure_image(
    settings: ProjectSettings, name: str, engine: DockerEngine, on_output: Output
) -> BuildResult:
    """The function's image for its current sources: built if missing, reused if not."""
    plan = prepare_build(settings, name, engine, on_output=on_output)
    result = build_image(plan, engine, on_output=on_output)
    if not result.reused:
        on_output(f"built {plan.image} in {result.seconds:.1f} s")
    return result

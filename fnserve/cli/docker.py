"""The Docker side of ``fn deploy --target docker`` and ``fn build --gateway``: the function's image
(built when its sources changed) and the gateway container, before the deploy goes through its
admin API like every other target's.

``fn deploy`` (:mod:`fnserve.cli.deploy`) and ``fn build`` call these; nothing here registers a command.
"""

from __future__ import annotations

import click

from fnserve.cli.common import console, out
from fnserve.runtime.settings import Settings


def prepare(settings: Settings, name: str, image: str | None) -> str:
    """The image ``name`` deploys (``image``, else the function's current build, built if missing),
    with the gateway container running in front; returns the image reference."""
    from fnserve.build import BuildError
    from fnserve.build.deploy import start_gateway
    from fnserve.build.workflows import ensure_image
    from fnserve.cli.build import show
    from fnserve.docker_engine import DockerEngine, EngineError

    try:
        engine = DockerEngine.connect()
        try:
            if image is None:
                image = ensure_image(settings, name, engine, show).plan.image
            elif engine.image(image) is None:
                raise click.ClickException(
                    f"image {image} is not in the local Docker engine: build it (fn build {name}) or "
                    "name one that `docker images` lists"
                )
            start_gateway(settings, engine, show)
        finally:
            engine.close()
    except (BuildError, EngineError) as exc:
        raise click.ClickException(str(exc)) from None
    return image


def build_gateway(settings: Settings, *, force: bool, push: bool) -> None:
    """``fn build --gateway``: the gateway's image, for the docker target and for clusters."""
    from fnserve import __version__
    from fnserve.build.deploy import ensure_gateway_image
    from fnserve.build.images import push_image
    from fnserve.cli.build import engine, show

    docker = engine()
    console.print("[bold]gateway[/]: building its image (fn gateway with the docker and kubernetes clients)")
    result = ensure_gateway_image(settings, docker, show, force=force)
    how = "unchanged, reused" if result.reused else f"built in {result.seconds:.1f} s"
    size = result.image.size_bytes / 2**20
    plan = result.plan
    out.print(f"{plan.image}  {plan.repository}:{__version__}  {plan.latest}  {size:.0f} MiB  ({how})")
    for ref in push_image(plan, docker, settings.registry, on_output=show) if push else []:
        out.print(f"pushed {ref}")

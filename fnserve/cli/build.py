"""``fn build``, ``fn base-image``, ``fn run``; and the container side of ``fn train``."""

from __future__ import annotations

import functools
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.markup import escape

from fnserve.cli.common import console, load_settings, out, user_errors
from fnserve.project import DEFAULT_PORT, ProjectSettings
from fnserve.runtime.redact import redact_data

F = TypeVar("F", bound=Callable[..., Any])


def show(line: str) -> None:
    """One line of build or container output, streamed as it comes."""
    bold = line.startswith("Step ") or line.startswith("built ") or line.startswith("training ")
    console.print(escape(line), style="bold" if bold else "dim", highlight=False, soft_wrap=True)


def engine() -> Any:
    from fnserve.docker_engine import DockerEngine

    docker = DockerEngine.connect()
    click.get_current_context().call_on_close(docker.close)
    return docker


@click.command("build")
@click.argument("names", nargs=-1)
@click.option(
    "--template", default=None, help="Template to build from (default: function.toml's, else tensorflow)."
)
@click.option(
    "--bake-checkpoint",
    "bake",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[VERSION]",
    help="Copy a checkpoint version into the image (default: the one the function asks for).",
)
@click.option("--push", is_flag=True, help="Push to the registry of fn.toml [build] (or --registry).")
@click.option("--registry", default=None, help="Registry host[:port][/path] to push to.")
@click.option("--base-image", default=None, help="Local base image (default fnserve/base:bookworm).")
@click.option("--force", is_flag=True, help="Build even when an image with the same content tag exists.")
@click.option("--gateway", is_flag=True, help="Build the gateway's image (fnserve/gateway), not functions'.")
@user_errors
def build_command(
    names: tuple[str, ...],
    template: str | None,
    bake: str | None,
    push: bool,
    registry: str | None,
    base_image: str | None,
    force: bool,
    gateway: bool,
) -> None:
    """Build one container image per function, tagged fnserve/NAME:<content-hash> and :latest.

    With no NAME, every function in ./functions. Never pulls: the base image is local
    (made by `fn base-image`, or made here when missing).

    \b
    Examples:
      fn build recs
      fn build                                  # every function
      fn build recs --bake-checkpoint 3         # checkpoint v3 inside the image
      fn build recs --push --registry registry.example.com:5000/team
      fn build --gateway                        # fnserve/gateway:<version> and :latest
    """
    if gateway:  # the gateway's image: for --target docker and clusters
        from fnserve.deploy import build_gateway_image

        if names or template or bake is not None:
            raise click.UsageError("--gateway builds the gateway's image only: no NAME, --template or --bake")
        console.print(
            "[bold]gateway[/]: building its image (fn gateway with the docker and kubernetes clients)"
        )
        settings = load_settings(registry=registry, base_image=base_image)
        for line in build_gateway_image(settings, force=force, push=push, on_output=show):
            out.print(line)
        return
    from fnserve.images.builds import build_image, prepare_build, push_image
    from fnserve.images.source import find_function, function_names
    from fnserve.images.templates import load_template

    settings = load_settings(registry=registry, base_image=base_image)
    names = names or tuple(function_names(settings.project_dir))
    for name in names:  # every name checked before the first (long) build starts
        load_template(find_function(settings.project_dir, name, template).template)
    docker = engine()
    for name in names:
        plan = prepare_build(settings, name, docker, template=template, bake=bake, on_output=show)
        console.print(f"[bold]{name}[/]: building {plan.image} ({plan.template} template)")
        result = build_image(plan, docker, on_output=show, force=force)
        how = "unchanged, reused" if result.reused else f"built in {result.seconds:.1f} s"
        size = result.image.size_bytes / 2**20
        out.print(f"{plan.image}  {plan.latest}  {size:.0f} MiB  ({how}; checkpoint {plan.checkpoint})")
        for ref in push_image(plan, docker, settings.registry, on_output=show) if push else []:
            out.print(f"pushed {ref}")


@click.command("base-image")
@click.option("--base-image", default=None, help="Reference to create (default fnserve/base:bookworm).")
@click.option(
    "--mirror", default=None, help="Debian mirror URL (default from fn.toml [build] debian_mirror)."
)
@click.option("--force", is_flag=True, help="Re-create it even if it exists.")
@user_errors
def base_image_command(base_image: str | None, mirror: str | None, force: bool) -> None:
    """Create the base image offline: debootstrap Debian bookworm with python3, then docker import.

    Needs root and debootstrap; takes about a minute. No registry is used, ever.

    \b
    Examples:
      fn base-image
      fn base-image --mirror http://mirror.internal/debian --force
    """
    from fnserve.images.base import create_base_image, plan_base

    settings = load_settings(base_image=base_image, debian_mirror=mirror)
    docker = engine()
    existing = docker.image(settings.base_image)
    if existing and not force:
        out.print(f"{settings.base_image} exists ({existing.id[:19]}); --force re-creates it")
        return
    plan = plan_base(settings.base_image, settings.debian_mirror)
    image_id = create_base_image(plan, docker, on_output=show)
    size = (docker.image(image_id).size_bytes if docker.image(image_id) else 0) / 2**20
    out.print(f"{settings.base_image}  {image_id[:19]}  {size:.0f} MiB")


@click.command("run")
@click.argument("name")
@click.option(
    "--port", type=int, default=None, help=f"Host port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks one)."
)
@click.option("--store", default=None, help="Checkpoint store URL (default from fn.toml).")
@click.option(
    "--network", default=None, help="Docker network; 'host' for a store on this machine's loopback."
)
@click.option(
    "--wait", "wait_s", type=float, default=180.0, show_default=True, help="Seconds to wait for ready."
)
@user_errors
def run_command(name: str, port: int | None, store: str | None, network: str | None, wait_s: float) -> None:
    """Run a function's image (built first if needed) until Ctrl-C, which stops and removes it.

    \b
    Examples:
      fn run recs
      curl 'http://127.0.0.1:8080/function/recs?user_country=NL&...'
      fn run recs --port 9000 --store s3://models/checkpoints
    """
    from fnserve.docker.running import serve_function
    from fnserve.images.source import find_function

    settings = load_settings(port=port, store=store)
    find_function(settings.project_dir, name)
    docker = engine()
    _sigterm_interrupts()  # `kill` stops and removes it too, like Ctrl-C
    try:
        running = serve_function(
            settings, name, docker, port=settings.port, network=network, wait_s=wait_s, on_output=show
        )
    except KeyboardInterrupt:
        raise click.Abort() from None  # the container, if started, was removed
    try:
        console.print(f"[bold]{name}[/]: ready in {running.seconds_to_ready:.1f} s at {running.url}")
        console.print(f"  curl {running.url}/function/{name}?...    (Ctrl-C stops and removes the container)")
        for line in docker.logs(running.id, follow=True, tail=0):
            show(line)
        raise click.ClickException(f"the container of {name} stopped: {docker.state(running.id).status}")
    except KeyboardInterrupt:
        console.print(f"stopping {name}")
    finally:
        docker.stop(running.id)
        docker.remove(running.id)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _sigterm_interrupts() -> None:
    """SIGTERM acts as Ctrl-C until the command ends (so containers are cleaned up either way)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    click.get_current_context().call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


@dataclass(frozen=True)
class ContainerTraining:
    """What `fn train --in-container` / `--k8s-job` asked for; ``train`` does it for one function."""

    k8s_job: bool
    schedule: str | None
    image: str | None
    secret: str | None
    cpus: float | None
    memory: str | None
    network: str | None

    @user_errors
    def train(self, settings: ProjectSettings, name: str, data: str | None) -> None:
        from fnserve.docker.containers import parse_memory
        from fnserve.docker.training import TrainOptions, train_function
        from fnserve.k8s.training import render_training

        try:
            memory_bytes = parse_memory(self.memory) if self.memory else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--memory") from None
        options = TrainOptions(data, self.cpus, memory_bytes, self.network)
        if not self.k8s_job:
            _sigterm_interrupts()  # the container is removed however training ends
            version = train_function(settings, name, engine(), options, on_output=show)
            out.print(f"{name}: published version {version}; the training container was removed")
            return
        image = self.image or cluster_image(settings, name)
        try:
            manifest = render_training(
                settings,
                name,
                image,
                data=data,
                cpus=self.cpus,
                memory_bytes=memory_bytes,
                schedule=self.schedule,
                secret=self.secret,
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        manifest = redact_data(manifest, settings.secrets())  # printed: the store's credentials are not
        try:
            import yaml

            text = yaml.safe_dump(manifest, sort_keys=False)
        except ImportError:  # PyYAML comes with the kubernetes client; JSON is YAML too
            text = json.dumps(manifest, indent=2) + "\n"
        click.echo(text, nl=False)


def cluster_image(settings: ProjectSettings, name: str) -> str:
    """The image a cluster runs for ``name``: this function's current build (made if missing), as
    the registry of fn.toml [build] names it."""
    from fnserve.images.builds import ensure_image

    plan = ensure_image(settings, name, engine(), on_output=show).plan
    return plan.remote(settings.registry)[0] if settings.registry else plan.image


def container_options(func: F) -> F:
    """`fn train`'s options for training in the function's image; the command gets ``container``
    (a :class:`ContainerTraining`, or None to train here)."""
    options = [
        click.option("--in-container", is_flag=True, help="Run train.py inside the function's image."),
        click.option("--cpus", type=click.FloatRange(min=0.01), help="CPU limit of the training container."),
        click.option("--memory", help="Memory limit of the training container, e.g. 4g."),
        click.option("--network", help="Docker network of the container ('host' reaches loopback stores)."),
        click.option("--k8s-job", is_flag=True, help="Print the Kubernetes Job that trains in the image."),
        click.option("--schedule", help="With --k8s-job: a CronJob on this cron schedule, e.g. '0 3 * * *'."),
        click.option("--image", help="With --k8s-job: the image reference (default: this build's tag)."),
        click.option(
            "--secret", help="With --k8s-job: Secret holding storage and database credentials (envFrom)."
        ),
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        picked = {key: kwargs.pop(key) for key in ("in_container", "k8s_job", "schedule", "image", "secret")}
        limits = {key: kwargs.pop(key) for key in ("cpus", "memory", "network")}
        in_container, k8s_job = picked.pop("in_container"), picked["k8s_job"]
        if in_container and k8s_job:
            raise click.UsageError("--in-container and --k8s-job: choose one")
        unused = [k for k, v in {**picked, **limits}.items() if v not in (None, False)]
        if not (in_container or k8s_job) and unused:
            raise click.UsageError(f"--{unused[0].replace('_', '-')} needs --in-container or --k8s-job")
        wanted = in_container or k8s_job
        kwargs["container"] = ContainerTraining(**picked, **limits) if wanted else None
        return func(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


COMMANDS = [build_command, base_image_command, run_command]

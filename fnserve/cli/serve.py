"""``fn serve`` and ``fn functions``."""

from __future__ import annotations

import click
from rich.table import Table

from fnserve.cli.common import console, load_settings, out, user_errors
from fnserve.project import DEFAULT_PORT, FUNCTIONS_DIR
from fnserve.runtime.app import create_app
from fnserve.runtime.loader import discover
from fnserve.runtime.server import bind_socket, run, serve
from fnserve.runtime.service import Runtime


@click.command("serve")
@click.argument("targets", nargs=-1, type=click.Path())
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces).")
@click.option(
    "--port", type=int, default=None, help=f"Port to bind (default {DEFAULT_PORT}; 0 picks a free one)."
)
@click.option("--store", default=None, help="Checkpoint store URL (default from fn.toml).")
@click.option(
    "--checkpoint-version",
    envvar="FNSERVE_CHECKPOINT_VERSION",
    default=None,
    help="Serve this checkpoint version (a number, or latest) instead of each function's own choice.",
)
@user_errors
def serve_command(
    targets: tuple[str, ...],
    host: str | None,
    port: int | None,
    store: str | None,
    checkpoint_version: str | None,
) -> None:
    """Serve functions over HTTP, in this process (no Docker, no cluster).

    TARGETS are function folders, predict.py files, or folders of function folders
    (default: ./functions).

    \b
    Examples:
      fn serve
      fn serve functions/recs --port 9000
      fn serve --host 0.0.0.0 --store s3://models/checkpoints
      fn serve functions/recs --checkpoint-version 3     # what a deployed version runs
    """
    settings = load_settings(host=host, port=port, store=store)
    found = discover(targets or [settings.project_dir / FUNCTIONS_DIR])
    if checkpoint_version is not None and checkpoint_version != "latest" and not checkpoint_version.isdigit():
        raise click.BadParameter("a version number or 'latest'", param_hint="--checkpoint-version")
    versions = {f.spec.name: checkpoint_version for f in found} if checkpoint_version else None
    runtime = Runtime(found, settings, versions=versions)
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    bound_host, bound_port = sock.getsockname()[:2]
    base = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
    console.print(f"fnserve: loading {len(found)} function(s), listening on {base}")

    def ready() -> None:
        for name, fn in runtime.functions.items():
            version = fn.loaded.version if fn.loaded else None
            console.print(
                f"  ready  {base}/function/{name}" + (f"  (checkpoint v{version})" if version else "")
            )

    try:
        run(serve(create_app(runtime), runtime, sock, on_ready=ready), settings.event_loop)
    finally:
        sock.close()


@click.command("functions")
@click.argument("targets", nargs=-1, type=click.Path())
@user_errors
def functions_command(targets: tuple[str, ...]) -> None:
    """List the project's functions, their inputs and published checkpoint versions.

    \b
    Examples:
      fn functions
    """
    settings = load_settings()
    runtime = Runtime(discover(targets or [settings.project_dir / FUNCTIONS_DIR]), settings)
    table = Table("function", "inputs", "output", "versions")
    for fn in runtime.functions.values():
        inputs = ", ".join(f"{f.name}: {f.kind}" for f in fn.schema.inputs)
        versions = ", ".join(map(str, fn.describe()["available_versions"])) or "-"
        table.add_row(
            fn.name, inputs, fn.schema.output.kind, versions if fn.spec.checkpoint else "(none needed)"
        )
    out.print(table)


COMMANDS = [serve_command, functions_command]

"""``fn serve`` and ``fn functions``: the runtime in this process, as ``python -m fnserve.runtime``."""

from __future__ import annotations

import click
from rich.table import Table

from fnserve.cli.common import console, load_settings, out, user_errors
from fnserve.project import DEFAULT_PORT, FUNCTIONS_DIR
from fnserve.runtime.loader import discover
from fnserve.runtime.main import StartError, serve_functions
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
    try:
        serve_functions(targets, settings, checkpoint_version=checkpoint_version, announce=console.print)
    except StartError as exc:
        raise click.BadParameter(str(exc), param_hint="--checkpoint-version") from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


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

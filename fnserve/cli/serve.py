"""``fn serve`` and ``fn functions``: the runtime in this process, as ``python -m fnserve.runtime``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

    Each version shows its key metrics and, for a variant made by `fn optimize`, its lineage
    (the technique and the version it was made from).

    \b
    Examples:
      fn functions
    """
    settings = load_settings()
    runtime = Runtime(discover(targets or [settings.project_dir / FUNCTIONS_DIR]), settings)
    table = Table("function", "inputs", "output", "versions")
    for fn in runtime.functions.values():
        inputs = ", ".join(f"{f.name}: {f.kind}" for f in fn.schema.inputs)
        checkpoint = fn.spec.checkpoint
        if checkpoint is None:
            versions = "(none needed)"
        else:
            numbers = fn.describe()["available_versions"]
            versions = "\n".join(
                version_line(v, runtime.store.manifest(checkpoint, v).metadata) for v in numbers
            )
        table.add_row(fn.name, inputs, fn.schema.output.kind, versions or "-")
    out.print(table)


KEY_METRICS = 3  # metrics shown per version; the speed fn optimize measured comes on top


def version_line(version: int, metadata: Mapping[str, Any]) -> str:
    """One version as `fn functions` shows it: its lineage, key metrics and measured speed.

    >>> version_line(4, {"metrics": {"roc_auc": 0.8123, "p50_batch1_ms": 0.41, "preds_per_s": 91000},
    ...                  "lineage": {"base_version": 3, "technique": "quantize-int8"}})
    'v4 ← quantize-int8 of v3: roc_auc 0.812, p50 0.41 ms, 91,000 preds/s'
    """
    metrics = metadata.get("metrics") or {}
    lineage = metadata.get("lineage") or {}
    line = f"v{version}"
    if lineage:
        line += f" ← {lineage.get('technique')} of v{lineage.get('base_version')}"
    speed = {"p50_batch1_ms", "preds_per_s", "max_batch_size", "size_bytes"}
    shown = [
        f"{key} {value:.3g}"
        for key, value in metrics.items()
        if key not in speed
        and "/" not in key
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ][:KEY_METRICS]
    if "p50_batch1_ms" in metrics:
        shown.append(f"p50 {metrics['p50_batch1_ms']:.3g} ms")
    if "preds_per_s" in metrics:
        shown.append(f"{metrics['preds_per_s']:,.0f} preds/s")
    return f"{line}: {', '.join(shown)}" if shown else line


COMMANDS = [serve_command, functions_command]

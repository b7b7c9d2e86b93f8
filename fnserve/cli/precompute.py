"""``fn precompute``."""

from __future__ import annotations

import click
from rich.progress import Progress
from rich.table import Table

from fnserve.cli.common import console, load_settings, out, user_errors
from fnserve.optimize.precompute import DEFAULT_LIMIT, Source, precompute
from fnserve.project import function_dir
from fnserve.runtime.errors import FunctionError
from fnserve.runtime.loader import discover
from fnserve.runtime.store import CheckpointStore


@click.command("precompute")
@click.argument("name")
@click.option("--inputs", "inputs_url", default=None, help="fsspec URL of the rows: Parquet or CSV.")
@click.option("--domain", is_flag=True, help="Every combination of the inputs (all of them finite).")
@click.option("--from", "base", default="latest", show_default=True, help="The version to precompute.")
@click.option("--limit", type=int, default=DEFAULT_LIMIT, show_default=True, help="Most rows in the table.")
@click.option("--store", default=None, help="Checkpoint store URL (default from fn.toml).")
@user_errors
def precompute_command(
    name: str, inputs_url: str | None, domain: bool, base: str, limit: int, store: str | None
) -> None:
    """Publish a version that answers known inputs from a table, not the model.

    The base version's model computes every row; the new version holds its files and the table
    (fnserve-table.parquet). Served, rows in the table are answered from memory, the others by
    the model (or 404 with `strict = true` under [table] in function.toml).

    \b
    Examples:
      fn precompute recs --inputs s3://bucket/popular.parquet
      fn precompute recs --inputs rows.csv --from 3
      fn precompute fare --domain --limit 50000
    """
    if (inputs_url is None) == (not domain):
        raise click.UsageError("give either --inputs URL or --domain")
    settings = load_settings(store=store)
    try:
        found = [f for f in discover([function_dir(settings.project_dir, name)]) if f.spec.name == name]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    if not found:
        raise FunctionError(f"no function {name!r} in {function_dir(settings.project_dir, name)}")
    store_ = CheckpointStore(
        settings.store, storage_options=dict(settings.storage_options), cache_dir=settings.cache_dir
    )
    source = Source(inputs_url) if inputs_url else Source.domain()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{name}: computing", total=None)
        result = precompute(
            found[0],
            store_,
            source,
            base=base,
            limit=limit,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    table = Table("function", "base version", "new version", "rows", "source", "table", "model time")
    table.add_row(
        result.name,
        str(result.base_version),
        str(result.version),
        f"{result.rows:,}",
        result.source,
        f"{result.table_bytes / 1e6:.2f} MB",
        f"{result.compute_s:.2f} s",
    )
    out.print(table)


COMMANDS = [precompute_command]

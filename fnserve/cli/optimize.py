"""``fn optimize``: a quantized or frozen variant of a version, measured beside it, then published."""

from __future__ import annotations

from collections.abc import Callable

import click
from rich.table import Table

from fnserve.cli.common import cli_error, console, load_settings, out
from fnserve.optimize import OptimizeError
from fnserve.optimize.pipeline import Refused, Result
from fnserve.runtime.errors import FnError


@click.command("optimize")
@click.argument("name")
@click.option("--from", "from_version", default="latest", show_default=True, help="The base version.")
@click.option(
    "--quantize", type=click.Choice(["int8", "float16", "dynamic"]), help="Post-training quantization."
)
@click.option("--freeze", is_flag=True, help="Variables into constants, the graph pruned and optimised.")
@click.option(
    "--max-drop", type=float, default=1.0, show_default=True, help="Most points (0.01) the metric may drop."
)
@click.option("--force", is_flag=True, help="Publish even if the metric drops more, or cannot be measured.")
def optimize_command(
    name: str, from_version: str, quantize: str | None, freeze: bool, max_drop: float, force: bool
) -> None:
    """Make a faster variant of a published version, measure both, publish it as a new version.

    The base and the variant are evaluated on the held-out data training published with the
    version (its task's metrics) and timed side by side, pinned to one core: latency at batch 1
    and predictions/s at the function's max_batch_size. A variant whose first metric drops by
    more than --max-drop points is not published, unless --force.

    \b
    Examples:
      fn optimize tagger --quantize int8
      fn optimize recs --from 3 --freeze
      fn optimize tagger --quantize float16 --max-drop 0.5
    """
    if (quantize is None) == (not freeze):
        raise click.UsageError("choose one technique: --quantize int8|float16|dynamic or --freeze")
    technique = f"quantize-{quantize}" if quantize else "freeze"
    settings = load_settings()
    from fnserve.optimize.pipeline import optimize

    try:
        result = optimize(
            settings, name, technique, from_version=from_version, max_drop=max_drop, force=force,
            progress=console.print,
        )  # fmt: skip
    except Refused as exc:
        out.print(comparison(exc.result))
        raise cli_error(exc) from None
    except (OptimizeError, FnError, ValueError) as exc:
        raise cli_error(exc if isinstance(exc, FnError) else OptimizeError(str(exc))) from None
    out.print(comparison(result))
    out.print(
        f"published {name} version {result.published_version} ({technique} of version {result.base.version})"
    )


def comparison(result: Result) -> Table:
    """Base and variant side by side, one row per measure (format, size, each metric, speed) and
    the change; the gate metric's row says how far it drops. One row per measure keeps the table
    narrow however many metrics (the tagger has one F1 per label)."""
    names = sorted({*result.base.metrics, *result.variant.metrics}, key=_metric_order(result))
    base, variant = result.base, result.variant
    table = Table(
        "", f"base (v{base.version})", f"variant ({variant.format})", "change",
        title=f"{result.name}: {result.technique} of version {base.version}"
        + (f" (gate: {result.gate} drops ≤ {result.max_drop:g} points)" if result.gate else ""),
        caption="\n".join(result.notes) or None,
    )  # fmt: skip
    table.add_row("format", base.format, variant.format, "")
    table.add_row(
        "size", _mb(base.size_bytes), _mb(variant.size_bytes), _times(variant.size_bytes, base.size_bytes)
    )
    for name in names:
        here, there = base.metrics.get(name), variant.metrics.get(name)
        change = "" if here is None or there is None else f"{(there - here) * 100:+.2f} points"
        if name == result.gate:
            name = f"{name} (gate)"
            if result.drop_points is None:
                change = "not measured"
            elif result.drop_points > result.max_drop:
                change = f"[bold red]{change} (drops {result.drop_points:.2f})[/]"
        table.add_row(name, _metric(here), _metric(there), change)
    table.add_row(
        "batch-1 p50 ms", f"{base.p50_batch1_ms:.3f}", f"{variant.p50_batch1_ms:.3f}",
        _times(variant.p50_batch1_ms, base.p50_batch1_ms),
    )  # fmt: skip
    table.add_row(
        f"preds/s @ {base.max_batch_size}", f"{base.preds_per_s:,.0f}", f"{variant.preds_per_s:,.0f}",
        _times(variant.preds_per_s, base.preds_per_s),
    )  # fmt: skip
    return table


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _times(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else ""


def _metric_order(result: Result) -> Callable[[str], tuple[bool, bool, str]]:
    first = result.gate
    return lambda name: (name.split("/")[0] != first, "/" in name, name)  # the gate first, per-label last


COMMANDS = [optimize_command]

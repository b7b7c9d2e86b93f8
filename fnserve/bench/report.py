"""What ``fn bench`` shows: a progress bar while the sweep runs, then a table of the results."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fnserve.bench.load import Progress as OnProgress
from fnserve.bench.plan import BenchPlan, Step
from fnserve.bench.stats import StepResult

# Short enough for an 80-column terminal: requests in flight, instances per request, successful
# requests, requests/s, predictions/s, latency percentiles, failed requests.
COLUMNS = ("concurrency", "batch", "requests", "req/s", "pred/s", "p50 ms", "p90 ms", "p99 ms", "errors")


@contextlib.contextmanager
def progress_bar(console: Console, plan: BenchPlan) -> Iterator[OnProgress]:
    """A bar over the whole sweep, naming the step running; yields the callback that moves it."""
    steps = plan.steps()
    index = {step: i for i, step in enumerate(steps)}
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )

    def update(step: Step, fraction: float) -> None:
        what = f"bench {plan.function}: concurrency {step.concurrency}, batch {step.batch}"
        bar.update(task, completed=index[step] + fraction, description=what)

    with bar:
        task = bar.add_task(f"bench {plan.function}", total=len(steps))
        yield update


def results_table(plan: BenchPlan, results: Sequence[StepResult]) -> Table:
    """One row per step: load, throughput, latency percentiles, errors."""
    how = "Arrow" if plan.arrow else "JSON"
    title = f"fn bench {plan.function} · {plan.url} · {how}"
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for name in COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    for r in results:
        errors = f"[red]{r.errors}[/red]" if r.errors else "0"
        table.add_row(
            str(r.concurrency),
            str(r.batch),
            f"{r.requests:,}",
            f"{r.requests_per_s:,.0f}",
            f"{r.predictions_per_s:,.0f}",
            *(milliseconds(v) for v in (r.p50_ms, r.p90_ms, r.p99_ms)),
            errors,
        )
    return table


def milliseconds(value: float) -> str:
    """Three significant digits or so: ``0.412``, ``4.12``, ``41.2``, ``412``.

    >>> milliseconds(0.41234), milliseconds(41.234), milliseconds(float("nan"))
    ('0.412', '41.2', '-')
    """
    if math.isnan(value):
        return "-"
    if value < 1:
        return f"{value:.3f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def error_notes(results: Sequence[StepResult]) -> list[str]:
    """Why requests failed, one line per step that had failures."""
    return [
        f"concurrency {r.concurrency}, batch {r.batch}: {r.errors} failed, first: {r.first_error}"
        for r in results
        if r.errors
    ]

"""How ``fn batch`` looks while it runs and when it stops: its progress bar and its summary."""

from __future__ import annotations

import dataclasses
import json
import time

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from fnserve.batch.run import Job
from fnserve.batch.summary import Progress as JobProgress
from fnserve.batch.summary import Summary
from fnserve.cli.common import console, out


class ProgressBar:
    """The progress bar: rows (or, before they are known, bytes read), rows/s, bad rows and an ETA."""

    def __init__(self, name: str, job: Job):
        self.name, self.job = name, job
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[rows]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[errors]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task: TaskID | None = None
        self.started = time.monotonic()

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def show(self, at: JobProgress) -> None:
        by_rows = at.total_rows is not None
        total, done = (at.total_rows, at.rows) if by_rows else (at.total_bytes, at.bytes_read)
        if self.task is None:  # resumed work counts as done from the start, not as speed
            self.started = time.monotonic()
            self.task = self.progress.add_task(
                self.name, total=total or None, completed=done, rows="", rate="", errors=""
            )
        seconds = max(time.monotonic() - self.started, 1e-9)
        rate = (at.rows - at.resumed_rows) / seconds
        rows = f"{at.rows:,}/{at.total_rows:,} rows" if by_rows else f"{at.rows:,} rows"
        errors = f"[red]{at.errors:,} bad[/]" if at.errors else "0 bad"
        self.progress.update(
            self.task,
            completed=done,
            total=total or None,
            rows=rows,
            rate=f"{rate:,.0f} rows/s",
            errors=errors,
        )


def show_summary(summary: Summary, as_json: bool) -> None:
    if as_json:
        out.print_json(
            json.dumps({**dataclasses.asdict(summary), "rows_per_s": round(summary.rows_per_s, 1)})
        )
        return
    table = Table("rows", "scored", "bad rows", "parts", "versions", "this run", "output", show_header=True)
    resumed = f" ({summary.resumed_parts} done before)" if summary.resumed_parts else ""
    versions = (
        ", ".join(f"v{v}: {n:,}" if v != "none" else f"{n:,}" for v, n in summary.versions.items()) or "-"
    )
    run = f"{summary.run_rows:,} rows in {summary.seconds:.1f} s ({summary.rows_per_s:,.0f} rows/s)"
    counts = (f"{summary.rows:,}", f"{summary.scored:,}", f"{summary.errors:,}", f"{summary.parts}{resumed}")
    table.add_row(*counts, versions, run, summary.output)
    out.print(table)
    if summary.errors:
        shown = "; ".join(
            f"row {row}: {reason}" if row is not None else reason for row, reason in summary.examples
        )
        out.print(f"bad rows are in {summary.errors_at}/" + (f" (first: {shown})" if shown else ""))
    if not summary.complete:
        out.print("[yellow]not complete[/]: run the same command again to go on")

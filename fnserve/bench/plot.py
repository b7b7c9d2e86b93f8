"""The sweep as a picture: latency (p50 solid, p99 dashed) against predictions/s, one colour per
batch size, each point labelled with its concurrency. Up and to the left is worse; the knee of a
line is where more concurrency stops buying throughput and starts costing latency.

Drawn with matplotlib's Agg canvas directly (no pyplot, no GUI backend, no global state). matplotlib
is optional: ``pip install 'fnserve[bench]'``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from fnserve.bench.plan import BenchError
from fnserve.bench.stats import StepResult


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save_plot(results: Sequence[StepResult], path: Path, title: str) -> Path:
    """Write the PNG to ``path``; returns it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BenchError("the plot needs matplotlib: pip install 'fnserve[bench]'") from None
    figure = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for i, batch in enumerate(sorted({r.batch for r in results})):
        line = sorted((r for r in results if r.batch == batch and r.requests), key=lambda r: r.concurrency)
        if not line:
            continue
        colour = f"C{i % 10}"
        xs = [r.predictions_per_s for r in line]
        axes.plot(xs, [r.p50_ms for r in line], "o-", color=colour, label=f"batch {batch}: p50")
        axes.plot(xs, [r.p99_ms for r in line], "s--", color=colour, label=f"batch {batch}: p99", alpha=0.7)
        for r in line:
            axes.annotate(
                f"c={r.concurrency}",
                (r.predictions_per_s, r.p50_ms),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    points = [r for r in results if r.requests]
    for scale, values in (
        (axes.set_xscale, [r.predictions_per_s for r in points]),
        (axes.set_yscale, [v for r in points for v in (r.p50_ms, r.p99_ms) if not math.isnan(v)]),
    ):
        if values and min(values) > 0 and max(values) / min(values) > 20:  # spans decades: log
            scale("log")
    axes.set_xlabel("throughput (predictions/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path

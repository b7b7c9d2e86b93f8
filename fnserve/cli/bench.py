"""``fn bench``."""

from __future__ import annotations

from pathlib import Path

import click

from fnserve.bench import BenchPlan, InputSpec, parse_levels, run
from fnserve.bench.plot import available, save_plot
from fnserve.bench.report import error_notes, progress_bar, results_table
from fnserve.cli.common import console, out, url_option, user_errors


@click.command("bench")
@click.argument("name")
@url_option("runs (fn serve, a container, or the gateway)")
@click.option(
    "-c",
    "--concurrency",
    default="1,4,16,64",
    show_default=True,
    help="Requests in flight: one step per level.",
)
@click.option(
    "-b", "--batch", default="1,32", show_default=True, help="Instances per request: one step per size."
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Seconds each step runs at most.  [default: 2, or 60 with --requests]",
)
@click.option(
    "--requests", type=click.IntRange(min=1), default=None, help="Stop each step after this many requests."
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON instances to send: {...}, [...] or {"instances": [...]}. Default: generated.',
)
@click.option(
    "-d", "pairs", multiple=True, metavar="KEY=VALUE", help="Set this input in every instance (@FILE: bytes)."
)
@click.option("--arrow", is_flag=True, help="Send Arrow IPC streams instead of JSON.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the PNG of latency against throughput goes.  [default: bench-NAME.png]",
)
@user_errors  # BenchError, ClientError
def bench_command(
    name: str, url: str, concurrency: str, batch: str, duration: float | None, requests: int | None,
    data: Path | None, pairs: tuple[str, ...], arrow: bool, plot_path: Path | None,
) -> None:  # fmt: skip
    """Load-test a running function: throughput and p50/p90/p99 latency over a sweep of
    concurrency levels and batch sizes, as a table and a PNG plot. Inputs are generated from the
    function's schema unless given. Load comes from one asyncio process on this machine.

    \b
    Examples:
      fn bench recs                                   # 1,4,16,64 in flight x batches of 1 and 32
      fn bench recs -c 1,64 -b 1,256 --duration 5 --plot recs.png
      fn bench tagger -d photo=@photo.jpg --requests 500
      fn bench recs@3 --url http://gateway:8080 --data instances.json --arrow
    """
    levels, sizes = parse_levels(concurrency, "--concurrency"), parse_levels(batch, "--batch")
    seconds = duration or (60.0 if requests else 2.0)
    plan = BenchPlan(name, url, levels, sizes, duration_s=seconds, requests=requests, arrow=arrow)
    with progress_bar(console, plan) as on_progress:
        results = run(plan, InputSpec.from_options(data, pairs), on_progress)
    out.print(results_table(plan, results))
    for note in error_notes(results):
        console.print(note, style="yellow", markup=False, highlight=False)
    if available():
        path = save_plot(results, plot_path or Path(f"bench-{name}.png"), f"fn bench {name}")
        console.print(f"plot: {path}")
    else:
        console.print("no plot: it needs matplotlib (pip install 'fnserve[bench]')")


COMMANDS = [bench_command]

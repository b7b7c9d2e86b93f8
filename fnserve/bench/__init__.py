"""Load-test a running function: ``fn bench`` as a library.

    >>> from fnserve.bench import BenchPlan, InputSpec, run
    >>> plan = BenchPlan("double", "http://127.0.0.1:8080", concurrency=(1, 16), batch=(1, 64))
    >>> results = run(plan, InputSpec())                                    # doctest: +SKIP
    >>> [(r.batch, r.concurrency, round(r.predictions_per_s), round(r.p99_ms, 1))  # doctest: +SKIP
    ...  for r in results]
    [(1, 1, 1210, 1.3), (1, 16, 2450, 9.8), (64, 1, 30100, 2.9), (64, 16, 61800, 21.0)]

:mod:`fnserve.bench.load` generates the load (asyncio + httpx, one process), :mod:`.stats` turns
latencies into percentiles and rates, :mod:`.report` and :mod:`.plot` show them.
"""

from __future__ import annotations

import asyncio

from fnserve.bench.inputs import InputSpec
from fnserve.bench.load import Progress, run_sweep
from fnserve.bench.plan import BenchError, BenchPlan, Step, parse_levels
from fnserve.bench.stats import StepResult

__all__ = ["BenchError", "BenchPlan", "InputSpec", "Step", "StepResult", "parse_levels", "run", "run_sweep"]


def run(plan: BenchPlan, inputs: InputSpec, progress: Progress | None = None) -> list[StepResult]:
    """Run the sweep (blocking); one result per step of ``plan.steps()``."""
    return asyncio.run(run_sweep(plan, inputs, progress))

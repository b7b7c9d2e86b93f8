"""How ``fn status`` shows a function's scheduled retraining (the ``training`` of ``/admin/status``).

    recs: retraining '0 3 * * *' (UTC), next 2025-06-02 03:00 (in 5h12m)
      2025-06-01 03:00  ok       v7   took 41s
      2025-05-31 03:00  failed        took 12s  train.py of 'recs' exited with status 1; nothing was ...

>>> lines({"name": "recs", "training": {"schedule": "@daily", "next_run": 120.0, "running": None,
...        "runs": [], "error": None}}, now=60.0)
["recs: retraining '@daily' (UTC), next 1970-01-01 00:02 (in 1m)", '  no run yet']
"""

from __future__ import annotations

import time
from typing import Any

SHOWN_RUNS = 3


def lines(function: dict[str, Any], *, now: float | None = None, runs: int = SHOWN_RUNS) -> list[str]:
    """The lines of one function's retraining; none when it has no schedule nor runs."""
    training = function.get("training")
    if not training:
        return []
    now = time.time() if now is None else now
    name, schedule, next_run = function["name"], training.get("schedule"), training.get("next_run")
    if training.get("error"):
        head = f"{name}: retraining not scheduled: {training['error']}"
    elif schedule is None:
        head = f"{name}: retraining: no [train] schedule any more"
    else:
        upcoming = f"{_when(next_run)} (in {_span(next_run - now)})" if next_run is not None else "-"
        head = f"{name}: retraining {schedule!r} (UTC), next {upcoming}"
    shown = [head]
    running = training.get("running")
    if running:
        shown.append(f"  {_when(running['started'])}  running  for {_span(now - running['started'])}")
    for run in training.get("runs", [])[:runs]:
        version = f"v{run['version']}" if run.get("version") is not None else ""
        took = f"took {_span(run['ended'] - run['started'])}" if run["outcome"] != "skipped" else ""
        reason = (run.get("reason") or "").split("\n", 1)[0]
        shown.append(
            f"  {_when(run['started'])}  {run['outcome']:<7}  {version:<4} {took:<9} {reason}".rstrip()
        )
    if not running and not training.get("runs"):
        shown.append("  no run yet")
    return shown


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))


def _span(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours = seconds // 60, seconds // 3600
    if hours < 1:
        return f"{minutes}m"
    if hours < 48:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{hours // 24}d"

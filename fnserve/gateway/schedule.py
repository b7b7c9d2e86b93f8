"""``[train] schedule`` and ``[train] data`` of a function's ``function.toml``: read and checked once.

One rule for every target: the Kubernetes CronJob (:mod:`fnserve.k8s.jobs`) and the gateway's own
scheduler on the local and docker targets (:mod:`fnserve.gateway.scheduler`) accept the same
schedules and read them the same way (in UTC)::

    # functions/recs/function.toml
    [train]
    schedule = "0 3 * * *"                 # five cron fields, or @hourly, @daily, @weekly, ...
    data = "s3://data/bookings/"           # FNSERVE_DATA of every scheduled run (optional)

A schedule is five cron fields (minute hour day-of-month month day-of-week: numbers, names such as
``MON`` and ``JAN``, ``*``, ranges, lists, steps, ``?`` for "any") or one of the macros a CronJob
takes. ``L``, ``W``, ``#`` and a sixth (seconds) field are refused: a CronJob refuses them too.
Times are computed by `cronsim <https://pypi.org/project/cronsim/>`_, which follows Debian's cron
(a restricted day-of-month *or* day-of-week matches, as in every cron).

>>> nightly = parse_schedule("0 3 * * *")
>>> nightly.next_after(datetime(2025, 6, 1, 12, 0, tzinfo=UTC)).isoformat()
'2025-06-02T03:00:00+00:00'
>>> parse_schedule("@hourly").next_after(datetime(2025, 6, 1, 12, 30, tzinfo=UTC)).hour
13
>>> parse_schedule("0 3 * *")
Traceback (most recent call last):
fnserve.gateway.schedule.ScheduleError: [train] schedule '0 3 * *' must be five cron ...: it has 4 fields
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronsim import CronSim, CronSimError

from fnserve.project import FUNCTION_FILE, FUNCTIONS_DIR, ConfigError, function_dir, read_toml

KEY = "[train] schedule"
# The macros a Kubernetes CronJob takes, as the five fields they stand for.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNSUPPORTED = re.compile(r"[LW#]", re.IGNORECASE)  # cronsim has them, a CronJob does not
_NAMES = re.compile(r"[A-Za-z]{3}")


class ScheduleError(ConfigError):
    """A malformed ``[train] schedule``; the message names the key, the file and what was expected."""


@dataclass(frozen=True)
class Schedule:
    expression: str  # as written in function.toml: what a CronJob gets
    fields: str  # the five fields it stands for (a macro expanded, "?" read as "*")

    def next_after(self, moment: datetime) -> datetime:
        """The first time after ``moment`` (timezone-aware) that the schedule is due, in UTC."""
        return next(CronSim(self.fields, moment.astimezone(UTC).replace(second=0, microsecond=0)))


@dataclass(frozen=True)
class ScheduledTraining:
    function: str
    schedule: Schedule
    data: str | None  # [train] data: the training data URL of every scheduled run, or None


def parse_schedule(text: Any, where: str = KEY) -> Schedule:
    """A checked schedule; a :class:`ScheduleError` names ``where`` and what was expected."""
    expected = f"must be five cron fields, e.g. '0 3 * * *' (03:00 UTC daily), or one of {', '.join(MACROS)}"
    if not isinstance(text, str):
        raise ScheduleError(f"{where} {text!r} {expected}: it is not a string")
    fields = MACROS.get(text.strip().lower(), text.strip())
    if fields.startswith("@"):
        raise ScheduleError(f"{where} {text!r} {expected}: {fields.split()[0]} is not one of them")
    count = len(fields.split())
    if count != 5:
        raise ScheduleError(f"{where} {text!r} {expected}: it has {count} field{'s' * (count != 1)}")
    unsupported = _UNSUPPORTED.search(_NAMES.sub("", fields))  # WED and JUL are names, not W or L
    if unsupported:
        raise ScheduleError(
            f"{where} {text!r} {expected}: {unsupported.group()!r} is not cron syntax a CronJob reads"
        )
    fields = " ".join(f.replace("?", "*") for f in fields.split())
    try:
        CronSim(fields, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ScheduleError(f"{where} {text!r} {expected}: {str(exc).lower()}") from None
    return Schedule(text, fields)


def train_table(table: Mapping[str, Any], where: str) -> tuple[Schedule | None, str | None]:
    """The checked ``schedule`` and ``data`` of a parsed ``function.toml`` (``where`` names it)."""
    train = table.get("train", {})
    if not isinstance(train, Mapping):
        raise ScheduleError(f"{where}: [train] must be a table")
    data = train.get("data")
    if data is not None and (not isinstance(data, str) or not data):
        raise ScheduleError(f"{where}: [train] data must be a URL string, got {data!r}")
    schedule = train.get("schedule")
    return (None if schedule is None else parse_schedule(schedule, f"{where}: {KEY}")), data


def scheduled_training(project_dir: Path, name: str) -> ScheduledTraining | None:
    """``[train]`` of ``functions/<name>/function.toml``; None when it sets no schedule (or the
    function has no folder in this project)."""
    path = function_dir(project_dir, name) / FUNCTION_FILE
    schedule, data = train_table(read_toml(path), f"{FUNCTIONS_DIR}/{name}/{FUNCTION_FILE}")
    return None if schedule is None else ScheduledTraining(name, schedule, data)

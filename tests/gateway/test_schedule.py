"""``[train] schedule``: one reading for the CronJob and the gateway's scheduler, and its errors,
which name the key, the file and what was expected (at deploy time too)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from fnserve.cli.main import cli
from fnserve.gateway.schedule import ScheduleError, parse_schedule, scheduled_training
from fnserve.k8s.jobs import TrainingJob, training_cronjob
from fnserve.k8s.spec import K8sSettings, function_spec
from fnserve.project import ProjectSettings
from tests.support.gateways import FNS

NOON = datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)  # a Sunday


@pytest.mark.parametrize(
    ("schedule", "after", "due"),
    [
        ("* * * * *", NOON, "2025-06-01 12:01"),
        ("0 3 * * *", NOON, "2025-06-02 03:00"),
        ("*/15 9-17 * * 1-5", NOON, "2025-06-02 09:00"),  # Monday morning
        ("30 12 1 6 *", NOON, "2025-06-01 12:30"),
        ("0 12 1 6 *", NOON, "2026-06-01 12:00"),  # due at 12:00 today, now past: next year
        ("0 0 * * MON", NOON, "2025-06-02 00:00"),
        ("0 4 ? * SUN", NOON, "2025-06-08 04:00"),  # "?" reads as "*", as a CronJob reads it
        ("0 0 1,15 * *", NOON, "2025-06-15 00:00"),
        ("@hourly", NOON, "2025-06-01 13:00"),
        ("@daily", NOON, "2025-06-02 00:00"),
        ("@weekly", NOON, "2025-06-08 00:00"),
        ("@monthly", NOON, "2025-07-01 00:00"),
        ("@yearly", NOON, "2026-01-01 00:00"),
    ],
)
def test_the_next_due_time(schedule: str, after: datetime, due: str) -> None:
    got = parse_schedule(schedule).next_after(after)
    assert got.tzinfo is not None and got.strftime("%Y-%m-%d %H:%M") == due


def test_a_time_in_another_zone_is_read_in_utc() -> None:
    from zoneinfo import ZoneInfo

    amsterdam = datetime(2025, 6, 1, 14, 0, 30, tzinfo=ZoneInfo("Europe/Amsterdam"))  # 12:00:30 UTC
    assert parse_schedule("0 13 * * *").next_after(amsterdam) == datetime(2025, 6, 1, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "why"),
    [
        ("0 3 * *", "it has 4 fields"),
        ("every day", "it has 2 fields"),
        ("0 0 3 * * *", "it has 6 fields"),  # no seconds field: a CronJob has none
        ("", "it has 0 fields"),
        ("@sometimes", "@sometimes is not one of them"),
        ("0 24 * * *", "bad hour"),
        ("61 * * * *", "bad minute"),
        ("0 0 31 2 *", "bad day-of-month"),  # never due
        ("0 0 L * *", "'L' is not cron syntax a CronJob reads"),
        ("0 0 * * MON#2", "'#' is not cron syntax a CronJob reads"),
        ("0 0 15W * *", "'W' is not cron syntax a CronJob reads"),
        (5, "it is not a string"),
    ],
)
def test_a_malformed_schedule_names_the_key_and_what_was_expected(schedule: object, why: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(schedule, "functions/recs/function.toml: [train] schedule")
    message = str(raised.value)
    assert message.startswith(f"functions/recs/function.toml: [train] schedule {schedule!r} must be five")
    assert "e.g. '0 3 * * *'" in message and "@daily" in message and message.endswith(why)
    assert isinstance(raised.value, ValueError)  # a ConfigError: settings errors are ValueErrors


def test_names_of_days_and_months_are_not_mistaken_for_l_or_w() -> None:
    assert parse_schedule("0 0 * JUL WED").fields == "0 0 * JUL WED"


def project_with(tmp_path: Path, toml: str, name: str = "recs") -> Path:
    folder = tmp_path / "functions" / name
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text((FNS / "double" / "predict.py").read_text())
    (folder / "function.toml").write_text(toml)
    return tmp_path


def test_train_table_of_function_toml(tmp_path: Path) -> None:
    project_with(tmp_path, '[train]\nschedule = "@hourly"\ndata = "s3://data/bookings/"\n')
    plan = scheduled_training(tmp_path, "recs")
    assert plan is not None and (plan.schedule.expression, plan.data) == ("@hourly", "s3://data/bookings/")
    assert scheduled_training(tmp_path, "other") is None  # no folder, no file: no schedule
    project_with(tmp_path, '[train]\ndata = "s3://d"\n', "unscheduled")
    assert scheduled_training(tmp_path, "unscheduled") is None
    project_with(tmp_path, '[train]\nschedule = "0 3 * * *"\ndata = 7\n', "bad_data")
    with pytest.raises(
        ScheduleError, match=r"functions/bad_data/function.toml: \[train\] data must be a URL"
    ):
        scheduled_training(tmp_path, "bad_data")
    project_with(tmp_path, 'train = "nightly"\n', "not_a_table")
    with pytest.raises(ScheduleError, match=r"\[train\] must be a table"):
        scheduled_training(tmp_path, "not_a_table")


def test_the_cronjob_takes_the_same_schedules_and_refuses_the_same() -> None:
    job = TrainingJob("recs", "fnserve/recs:latest", "s3://models")
    assert training_cronjob(job, schedule="0 4 ? * SUN")["spec"]["schedule"] == "0 4 ? * SUN"  # as written
    for bad in ("0 0 L * *", "0 3 * *", "@sometimes"):
        with pytest.raises(ScheduleError, match=r"^schedule .* must be five cron fields"):
            training_cronjob(job, schedule=bad)
    settings = ProjectSettings.from_mapping(Path("/p"), {}, {}, {"store": "s3://models"})
    table = {"train": {"schedule": "every night", "data": "s3://d"}}
    with pytest.raises(
        ScheduleError, match=r"functions/recs/function.toml: \[train\] schedule 'every night'"
    ):
        function_spec(settings, K8sSettings(), "ml", "recs", table)
    ok = function_spec(
        settings, K8sSettings(), "ml", "recs", {"train": {"schedule": "@daily", "data": "s3://d"}}
    )
    assert (ok.schedule, ok.training_data) == ("@daily", "s3://d")


def test_fn_deploy_of_a_malformed_schedule_fails_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_with(tmp_path, '[train]\nschedule = "0 3 * *"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FNSERVE_GATEWAY_URL", f"http://127.0.0.1:{closed}")  # no gateway there
    monkeypatch.setenv("FNSERVE_GATEWAY_TARGET", "local")
    result = CliRunner().invoke(cli, ["deploy", "recs"], env={"COLUMNS": "300"}, catch_exceptions=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        "functions/recs/function.toml: [train] schedule '0 3 * *' must be five cron fields" in result.output
    )
    assert "it has 4 fields" in result.output
    assert not (tmp_path / ".fnserve" / "deploy" / "state.json").exists()  # nothing was deployed
    (tmp_path / "functions" / "recs" / "function.toml").write_text('[train]\nschedule = "0 3 * * *"\n')
    deployed = CliRunner().invoke(cli, ["deploy", "recs", "--min", "0"], catch_exceptions=False)
    assert deployed.exit_code == 0, deployed.output

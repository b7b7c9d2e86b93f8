"""``fn batch`` as a user runs it: its help, its summary (a table, or JSON for scripts), one-line
errors for every mistake, and a job killed half-way (SIGKILL) and run again ending as an
uninterrupted run does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fnserve.cli.main import cli
from tests.support.batching import FNS, errors, output, publish_rated, rows, write


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(FNS / "rated", tmp_path / "functions" / "rated")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FNSERVE_STORE", f"file://{tmp_path}/store")
    monkeypatch.setenv("FNSERVE_CACHE", str(tmp_path / "cache"))
    publish_rated(f"file://{tmp_path}/store", tmp_path / "scratch")
    write(rows(300, bad_every=60), tmp_path / "in.parquet", "parquet")
    return tmp_path


def fn(*args: str) -> Result:
    return CliRunner().invoke(cli, ["batch", *args], catch_exceptions=False)


def test_help_says_what_it_does_with_examples() -> None:
    result = fn("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output and "fn batch recs --input" in result.output
    assert "--k8s" in result.output and "--max-errors" in result.output


def test_a_run_prints_its_summary_and_json_for_scripts(project: Path) -> None:
    result = fn("rated", "--input", "in.parquet", "--output", "out", "--key", "id", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert (summary["rows"], summary["scored"], summary["errors"], summary["complete"]) == (300, 295, 5, True)
    assert summary["versions"] == {"1": 295} and summary["examples"][0] == [59, "day: must be <= 7, got 9"]
    again = fn("rated", "--input", "in.parquet", "--output", "out", "--key", "id")
    assert again.exit_code == 0
    assert "300" in again.output and "0 rows in" in again.output  # complete: nothing done again
    assert "bad rows are in" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--input", "in.parquet", "--output", "o"], "no function 'nope'"),
        (["rated", "--input", "missing.parquet", "--output", "o"], "no input at missing.parquet"),
        (
            ["rated", "--input", "in.parquet", "--output", "o"],
            "column id is not an input (carry it into the output with --key id",
        ),
        (["rated", "--input", "in.parquet", "--output", "o", "--key", "id", "--version", "9"], "version 9"),
        (
            ["rated", "--input", "in.parquet", "--output", "o", "--key", "id", "--batch-size", "65"],
            "at most 64 rows per call",
        ),
        (
            ["rated", "--input", "in.parquet", "--output", "functions", "--key", "id"],
            "functions exists and is not the output of fn batch",
        ),
        (
            ["rated", "--input", "in.parquet", "--output", "o", "--parallelism", "2"],
            "--parallelism needs --k8s",
        ),
        (
            ["rated", "--input", "in.parquet", "--output", "o", "--k8s", "--url", "http://x"],
            "--url and --k8s: choose one",
        ),
        (
            [
                "rated",
                "--input",
                "in.parquet",
                "--output",
                "o",
                "--key",
                "id",
                "--k8s",
                "--image",
                "i",
                "--dry-run",
            ],
            "in.parquet is on this machine: a cluster needs input and output URLs it can reach",
        ),
        (
            ["rated", "--input", "in.parquet", "--output", "o", "--key", "id", "--url", "http://127.0.0.1:9"],
            "cannot reach http://127.0.0.1:9",
        ),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_problem(
    project: Path, args: list[str], message: str
) -> None:
    result = fn(*args)
    assert result.exit_code == 2 if "--" in message.split(" ")[0] else result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not (project / "o").exists()


def test_a_job_killed_half_way_and_run_again_ends_as_an_uninterrupted_one(project: Path) -> None:
    write(rows(2000, bad_every=70), project / "big.csv", "csv")
    command = [
        sys.executable,
        "-m",
        "fnserve.cli",
        "batch",
        "rated",
        "--input",
        "big.csv",
        "--key",
        "id",
        "--part-rows",
        "200",
    ]
    env = {**os.environ, "FNSERVE_TEST_RATED_PAUSE_S": "0.01", "COLUMNS": "200"}
    killed = subprocess.Popen(
        [*command, "--output", "out"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    done = project / "out" / "_fnbatch" / "done"
    deadline = time.monotonic() + 60
    while len(list(done.glob("*.json"))) < 3 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert 3 <= len(list(done.glob("*.json"))) < 10, "killed before the end"
    resumed = subprocess.run(
        [*command, "--output", "out", "--json"], env={**os.environ}, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed_parts"] >= 3 and summary["complete"] and summary["rows"] == 2000
    whole = subprocess.run(
        [*command, "--output", "whole"], env={**os.environ}, capture_output=True, text=True
    )
    assert whole.returncode == 0, whole.stderr
    assert output(project / "out").equals(output(project / "whole"))
    assert errors(project / "out").equals(errors(project / "whole"))

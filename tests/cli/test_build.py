"""`fn build`, `fn run`, `fn base-image` and `fn train --in-container/--k8s-job`: mistakes are
one-line errors, never tracebacks. No Docker engine needed (tests/docker/test_engine.py has one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fnserve.cli.main import cli

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/fnserve-tests/docker.sock"}


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, args, env={**NO_ENGINE, **(env or {})}, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "functions" / "recs"
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text("from fnserve import predict\n")
    (folder / "train.py").write_text("raise SystemExit(0)\n")
    return tmp_path


@pytest.mark.parametrize("args", [["build", "recs"], ["run", "recs"], ["base-image"]])
def test_engine_not_running_says_how_to_start_it(project: Path, args: list[str]) -> None:
    code, output = run(args, project)
    assert code == 1 and "Docker engine is not reachable" in output and "dockerd" in output
    assert "Traceback" not in output


def test_unknown_function_before_any_engine(project: Path) -> None:
    for args in (["build", "recs", "nope"], ["run", "nope"]):
        code, output = run(args, project)
        assert code == 1 and "no function 'nope'" in output and "recs" in output
    code, output = run(["build", "recs", "--template", "cobol"], project)
    assert code == 1 and "unknown template 'cobol'" in output


def test_container_flags_need_a_container(project: Path) -> None:
    code, output = run(["train", "recs", "--cpus", "2"], project)
    assert code == 2 and "--cpus needs --in-container or --k8s-job" in output
    code, output = run(["train", "recs", "--in-container", "--k8s-job"], project)
    assert code == 2 and "choose one" in output
    code, output = run(["train", "recs", "--in-container", "--memory", "lots"], project)
    assert code == 2 and "--memory" in output and "512m" in output


def test_k8s_job_and_cronjob_are_printed(project: Path) -> None:
    image = "registry.example/fnserve/recs:3f2a9c1b7d0e"
    args = ["train", "recs", "--k8s-job", "--image", image, "--store", "s3://models/ckpt", "--cpus", "2"]
    code, output = run(args, project)
    assert code == 0, output
    job = yaml.safe_load(output)
    assert job["kind"] == "Job" and job["spec"]["template"]["spec"]["containers"][0]["image"] == image
    code, output = run([*args, "--memory", "4g", "--schedule", "0 3 * * *", "--secret", "s3"], project)
    cron = yaml.safe_load(output)
    assert code == 0 and cron["kind"] == "CronJob" and cron["spec"]["schedule"] == "0 3 * * *"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2000m", "memory": "4096Mi"}


def test_k8s_job_refuses_a_local_store(project: Path) -> None:
    code, output = run(["train", "recs", "--k8s-job", "--image", "fnserve/recs:abc"], project)
    assert code == 1 and "is on this machine" in output and "Traceback" not in output
    code, output = run(
        ["train", "recs", "--k8s-job", "--image", "x", "--store", "s3://m", "--schedule", "daily"], project
    )
    assert code == 1 and "five cron fields" in output


def test_readme_build_flags_exist() -> None:
    """Every flag the README's container section names is an option of the command it names."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Build and run containers", 1)[1].split("\n## ", 1)[0]
    commands = {name: set() for name in ("build", "run", "base-image", "train")}
    for name, command in cli.commands.items():  # type: ignore[attr-defined]
        if name in commands:
            commands[name] = {opt for param in command.params for opt in getattr(param, "opts", [])}
    mentioned = re.findall(r"fn (build|run|base-image|train)\b([^`|\n]*)", section)
    table = re.findall(r"\| `fn ([a-z-]+)[^|]*\| ([^\n]*)\|", section)
    pairs = [(cmd, flag) for cmd, rest in mentioned for flag in re.findall(r"(--[a-z][a-z0-9-]*)", rest)]
    pairs += [(cmd, flag) for cmd, rest in table for flag in re.findall(r"`(--[a-z][a-z0-9-]*)", rest)]
    assert len(pairs) > 15
    for command, flag in pairs:
        assert flag in commands[command], f"README: fn {command} {flag} is not an option"

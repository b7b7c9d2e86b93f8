"""`fn deploy/status/scale/split/promote/rollback/logs/delete`: without a gateway (the saved state)
and through a running gateway's admin API."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fnserve.cli.common import load_settings
from fnserve.cli.main import cli
from fnserve.gateway.control import ControlError, connect
from fnserve.gateway.platform import PlatformError
from fnserve.gateway.targets import platform_for
from tests.support.gateways import FNS, TOKEN, deployment, running_gateway, settings_for


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FNSERVE_GATEWAY_URL", f"http://127.0.0.1:{closed_port()}")  # no gateway there
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, list(args), catch_exceptions=False)


def saved(project: Path) -> dict:  # type: ignore[type-arg]
    return dict(json.loads((project / ".fnserve/deploy/state.json").read_text())["functions"])


def test_without_a_gateway_changes_go_to_the_saved_state(fn: CliRunner, tmp_path: Path) -> None:
    image = str(FNS / "double")
    deployed = run(fn, "deploy", "double", "--image", image, "--min", "0", "--scale-to-zero-after", "60")
    assert deployed.exit_code == 0, deployed.output
    assert "saved state (no gateway running" in deployed.output
    assert run(fn, "deploy", "double", "--version", "2", "--image", image, "--weight", "10").exit_code == 0
    assert saved(tmp_path)["double"]["scaling"]["min_replicas"] == 0
    assert {k: v["weight"] for k, v in saved(tmp_path)["double"]["versions"].items()} == {"1": 90, "2": 10}

    assert run(fn, "promote", "double", "2").exit_code == 0
    assert run(fn, "rollback", "double").exit_code == 0
    assert run(fn, "split", "double", "1=50", "2=50").exit_code == 0
    assert run(fn, "scale", "double", "--max", "3").exit_code == 0
    state = saved(tmp_path)["double"]
    assert [v["weight"] for v in state["versions"].values()] == [50, 50]
    assert state["scaling"]["max_replicas"] == 3
    status = run(fn, "status")
    assert status.exit_code == 0 and "double" in status.output and "50%" in status.output

    assert run(fn, "delete", "double", "--yes").exit_code == 0
    assert saved(tmp_path) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["split", "double", "1=90"], "add up to 100"),
        (["split", "double", "1"], "VERSION=WEIGHT"),
        (["promote", "double", "7"], "no version '7'"),
        (["rollback", "double"], "no earlier split"),
        (["scale", "double", "--min", "3", "--max", "2"], "min (3) <= max (2)"),
        (["logs", "nope"], "no function named 'nope'"),
        (["deploy", "other", "--image", "nowhere"], "not a function folder"),
        (["deploy", "double", "--checkpoint-version", "new"], "a number or 'latest'"),
        (["status", "nope"], "no function named 'nope'"),
    ],
)
def test_mistakes_are_one_line_errors(fn: CliRunner, args: list[str], message: str) -> None:
    assert run(fn, "deploy", "double", "--image", str(FNS / "double"), "--min", "0").exit_code == 0
    result = run(fn, *args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_with_a_gateway_running_changes_go_through_its_admin_api(
    fn: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = deployment("double", ("1", "double", 100, "latest"), min_replicas=0)
    with running_gateway(tmp_path, [idle]) as gw:
        monkeypatch.setenv("FNSERVE_GATEWAY_URL", gw.url)
        monkeypatch.setenv("FNSERVE_GATEWAY_TOKEN", "wrong")
        refused = run(fn, "status")
        monkeypatch.setenv("FNSERVE_GATEWAY_TOKEN", TOKEN)
        status = run(fn, "status", "double")
        added = run(
            fn, "deploy", "double", "--version", "2", "--image", str(FNS / "double"), "--weight", "20"
        )
        routed = gw.gateway.functions["double"].split.bounds
        with pytest.raises(ControlError, match="runs target 'local', not 'docker'"):
            connect(load_settings(), "docker")
    assert refused.exit_code != 0 and "refused the admin token" in refused.output
    assert status.exit_code == 0 and "0/0" in status.output  # ready/desired: scaled to zero
    assert added.exit_code == 0 and f"the gateway at {gw.url}" in added.output
    assert routed == [80, 100]  # the running gateway routes by it already


def test_targets_are_looked_up_by_name(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="unknown target 'moon'; choose one of docker, k8s, local"):
        platform_for("moon", settings_for(tmp_path))
    local = platform_for("local", settings_for(tmp_path))
    assert type(local).__name__ == "LocalPlatform"


def test_gateway_settings_from_fn_toml_environment_and_flags(tmp_path: Path) -> None:
    from fnserve.project import ProjectSettings

    config = {"gateway": {"port": 9000, "auth": "token", "target": "docker", "url": "http://gw:80/"}}
    settings = ProjectSettings.from_mapping(
        tmp_path, config, {"FNSERVE_GATEWAY_TOKEN": "s3cret"}, {"gateway_port": 0}
    )
    assert (settings.gateway_port, settings.gateway_auth, settings.gateway_target) == (0, "token", "docker")
    assert (settings.gateway_url, settings.gateway_token, settings.gateway_host) == (
        "http://gw:80",
        "s3cret",
        "127.0.0.1",
    )
    for bad, message in [
        ({"auth": "maybe"}, "'open' or 'token'"),
        ({"url": "gw:80"}, "http"),
        ({"port": 70000}, "range"),
    ]:
        with pytest.raises(ValueError, match=message):
            ProjectSettings.from_mapping(tmp_path, {"gateway": bad}, {}, {})


def test_a_rollout_policy_is_read_checked_and_saved_at_deploy_time(fn: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "functions" / "weighted"
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text((FNS / "weighted" / "predict.py").read_text())
    (folder / "function.toml").write_text("[rollout]\nstages = [{ weight = 10 }]\n")
    refused = run(fn, "deploy", "weighted")
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert "functions/weighted/function.toml: [rollout] stages: the last stage must be { weight = 100 }" in (
        " ".join(refused.output.split())
    )
    (folder / "function.toml").write_text("[rollout]\n[rollout.gates]\naccuracy = 0.9\n")
    unknown = run(fn, "deploy", "weighted")
    assert unknown.exit_code != 0 and "gates: no metric 'accuracy'; known: error_rate" in unknown.output
    bad_flag = run(fn, "deploy", "weighted", "--rollout-stages", "shadow,ten,100")
    assert bad_flag.exit_code != 0 and "'ten' is not 'shadow[:N]' or 'WEIGHT[:N]'" in bad_flag.output
    (folder / "function.toml").write_text("[rollout]\nshadow_fraction = 0.5\n")
    deployed = run(fn, "deploy", "weighted", "--rollout-stages", "shadow:50,20:50,100")
    assert deployed.exit_code == 0, deployed.output
    policy = saved(tmp_path)["weighted"]["policy"]
    assert policy["shadow_fraction"] == 0.5
    assert [s.get("weight", "shadow") for s in policy["stages"]] == ["shadow", 20, 100]
    assert run(fn, "rollout", "weighted").output.startswith("weighted: no rollout yet")
    assert run(fn, "deploy", "weighted", "--no-rollout").exit_code == 0
    assert saved(tmp_path)["weighted"]["policy"] is None
    assert "has no rollout policy" in run(fn, "rollout", "weighted").output


def test_status_shows_standbys_and_the_last_cold_start_in_parts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from fnserve.cli.deploy import print_status

    monkeypatch.setattr("fnserve.cli.deploy.out", Console(width=160))  # a terminal wide enough

    cold = {"version": "1", "at": 0.0, "standby": True, "total_s": 0.322, "start_s": 0.004, "import_s": 0.0}
    cold |= {"load_s": 0.164, "warm_up_s": 0.133, "ready_s": 0.003}
    version = {"version": "1", "weight": 100, "ready": 0, "desired": 0, "standby": 1}
    print_status([{"name": "recs", "versions": [version], "last_cold_start": cold, "events": []}])
    shown = capsys.readouterr().out
    assert "0/0 +1 standby" in shown
    assert "recs cold start 0.32s (standby): load 0.16s, warm_up 0.13s\n" in shown  # < 5 ms left out

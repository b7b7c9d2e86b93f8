"""``fn deploy --target k8s``: the dry run's YAML, the default target, and the commands end to end
against the emulator through a kubeconfig (no gateway running: the platform is used directly)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from fnserve.cli.main import cli
from fnserve.deploy import resolve_target
from fnserve.project import ProjectSettings
from tests.support.k8s_emulator import Cluster, open_cluster

FN_TOML = (
    '[store]\nroot = "s3://models/ckpt"\n[k8s]\nnamespace = "ns"\n[gateway]\nurl = "http://127.0.0.1:9"\n'
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "functions" / "recs").mkdir(parents=True)
    (tmp_path / "functions" / "recs" / "predict.py").write_text("")
    (tmp_path / "functions" / "recs" / "function.toml").write_text('[resources]\ncpu = 1\nmemory = "2Gi"\n')
    (tmp_path / "fn.toml").write_text(FN_TOML)
    monkeypatch.chdir(tmp_path)
    for key in ("KUBECONFIG", "FNSERVE_GATEWAY_TARGET", "FNSERVE_K8S_NAMESPACE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config of the machine running the tests
    return tmp_path


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with open_cluster("emulator") as opened:
        yield opened


def test_dry_run_prints_every_object_as_valid_yaml_and_applies_nothing(project: Path) -> None:
    args = ["deploy", "recs", "--target", "k8s", "--dry-run", "-o", "yaml", "--version", "3", "--min", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# fn deploy recs --target k8s --dry-run: nothing was applied")
    objects = [doc for doc in yaml.safe_load_all(result.output) if doc]
    assert [f"{o['kind']}/{o['metadata']['name']}" for o in objects] == [
        "ServiceAccount/fnserve-gateway",
        "Role/fnserve-gateway",
        "RoleBinding/fnserve-gateway",
        "Deployment/fnserve-gateway",
        "Service/fnserve-gateway",
        "ConfigMap/fn-recs",
        "Service/fn-recs",
        "Deployment/fn-recs-v3",
        "Service/fn-recs-v3",
        "HorizontalPodAutoscaler/fn-recs-v3",
        "PodDisruptionBudget/fn-recs-v3",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37", strict=True)
        assert obj["metadata"]["namespace"] == "ns"
    runtime = objects[7]["spec"]["template"]["spec"]["containers"][0]
    assert runtime["image"] == "fnserve/recs:latest"
    assert runtime["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert "&id" not in result.output  # no YAML anchors


def test_dry_run_as_a_json_list_and_only_for_k8s(project: Path) -> None:
    result = CliRunner().invoke(cli, ["deploy", "recs", "--target", "k8s", "--dry-run", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kind"] == "List"
    refused = CliRunner().invoke(cli, ["deploy", "recs", "--target", "local", "--dry-run"])
    assert refused.exit_code == 2
    assert "use it with --target k8s" in refused.output


def test_k8s_is_the_default_target_when_a_kubeconfig_is_present(project: Path) -> None:
    kubeconfig = project / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    settings = ProjectSettings.load(project, {}, {})
    assert resolve_target(settings, None, {}) == "local"
    assert resolve_target(settings, None, {"KUBECONFIG": str(kubeconfig)}) == "k8s"
    assert resolve_target(settings, "docker", {"KUBECONFIG": str(kubeconfig)}) == "docker"
    environ = {"KUBECONFIG": str(kubeconfig), "FNSERVE_GATEWAY_TARGET": "local"}
    assert resolve_target(ProjectSettings.load(project, environ, {}), None, environ) == "local"
    (project / "fn.toml").write_text(FN_TOML.replace("[gateway]\n", '[gateway]\ntarget = "docker"\n'))
    configured = ProjectSettings.load(project, {}, {})
    assert resolve_target(configured, None, {"KUBECONFIG": str(kubeconfig)}) == "docker"


def test_deploy_split_rollback_delete_through_a_kubeconfig(
    project: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cluster.emulator is not None
    kubeconfig = project / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: emu\n"
        f"clusters: [{{name: emu, cluster: {{server: '{cluster.emulator.url}'}}}}]\n"
        "users: [{name: me, user: {token: abc}}]\n"
        "contexts: [{name: emu, context: {cluster: emu, user: me}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("FNSERVE_GATEWAY_TARGET", "k8s")  # status, split, ... follow deploy's target
    runner = CliRunner()
    first = runner.invoke(
        cli, ["deploy", "recs", "--image", "reg/fnserve/recs:ab", "--version", "3", "--min", "0"]
    )
    assert first.exit_code == 0, first.output
    assert "the k8s target" in first.output
    assert set(cluster.emulator.objects("Deployment")) == {"fnserve-gateway", "fn-recs-v3"}
    assert "fnserve-gateway" in cluster.emulator.objects("Secret")
    canary = ["deploy", "recs", "--image", "reg/fnserve/recs:cd", "--version", "4", "--weight", "10"]
    assert runner.invoke(cli, canary).exit_code == 0
    assert set(cluster.emulator.objects("Deployment")) == {"fnserve-gateway", "fn-recs-v3", "fn-recs-v4"}
    steps = [
        (["split", "recs", "3=50", "4=50"], {"3": 50, "4": 50}),
        (["rollback", "recs"], {"3": 90, "4": 10}),
    ]
    for step, weights in steps:
        result = runner.invoke(cli, step)
        assert result.exit_code == 0, result.output
        state = json.loads(cluster.emulator.objects("ConfigMap")["fn-recs"]["data"]["deployment.json"])
        assert {label: v["weight"] for label, v in state["versions"].items()} == weights
    assert runner.invoke(cli, ["delete", "recs", "--yes"]).exit_code == 0
    assert set(cluster.emulator.objects("Deployment")) == {"fnserve-gateway"}
    assert "fn-recs" not in cluster.emulator.objects("ConfigMap")

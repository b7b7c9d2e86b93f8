"""`fn` never prints a store's credentials: in its errors, the k8s objects it prints, or the job
manifests; URLs appear redacted (``s3://***@bucket/...``)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fnserve.cli.main import cli


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "functions" / "recs"
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text("")
    (folder / "train.py").write_text("raise SystemExit('not reached')\n")
    monkeypatch.chdir(tmp_path)
    for key in ("KUBECONFIG", "FNSERVE_GATEWAY_TARGET", "FNSERVE_K8S_NAMESPACE", "FNSERVE_STORE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_storage_error_names_the_store_redacted(project: Path, failing_http: str) -> None:
    password = f"pw-{uuid.uuid4().hex[:12]}"
    store = f"http://reader:{password}@{failing_http}/store"
    result = CliRunner().invoke(cli, ["train", "recs", "--missing", "--store", store])
    assert result.exit_code == 1
    assert f"storage at http://***@{failing_http}/store/recs is unavailable" in result.output
    assert password not in result.output and "reader:" not in result.output
    assert "Traceback" not in result.output


def credentialled_project(project: Path) -> tuple[str, str]:
    url_secret, option_secret = f"wJalr{uuid.uuid4().hex[:12]}", f"opt-{uuid.uuid4().hex[:12]}"
    (project / "fn.toml").write_text(
        f'[store]\nroot = "s3://AKIAFAKEKEYID:{url_secret}@models/ckpt"\n'
        f'options = {{ key = "AKIAFAKEKEYID", secret = "{option_secret}", anon = false }}\n'
        '[k8s]\nnamespace = "ns"\n[gateway]\nurl = "http://127.0.0.1:9"\n'
    )
    return url_secret, option_secret


def test_the_k8s_dry_run_prints_no_credentials(project: Path) -> None:
    secrets = credentialled_project(project)
    for output in ("yaml", "json"):
        args = ["deploy", "recs", "--target", "k8s", "--dry-run", "-o", output]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        for secret in (*secrets, "AKIAFAKEKEYID"):
            assert secret not in result.output, output
    objects = json.loads(result.output)["items"]  # still parses
    runtime = next(o for o in objects if o["metadata"]["name"] == "fn-recs-v1")
    env = {e["name"]: e.get("value") for e in runtime["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FNSERVE_STORE"] == "s3://***@models/ckpt"
    assert json.loads(env["FNSERVE_STORE_OPTIONS"]) == {"anon": False, "key": "***", "secret": "***"}


def test_the_printed_training_job_holds_no_credentials(project: Path) -> None:
    secrets = credentialled_project(project)
    args = ["train", "recs", "--k8s-job", "--image", "reg/fnserve/recs:ab", "--secret", "creds"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for secret in (*secrets, "AKIAFAKEKEYID"):
        assert secret not in result.output
    job = yaml.safe_load(result.output)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "FNSERVE_STORE", "value": "s3://***@models/ckpt"} in container["env"]
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]  # keys stay as they are

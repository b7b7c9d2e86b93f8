"""``fn batch --k8s``: the Indexed Job passes the Kubernetes schemas in strict mode; applying and
following it, against the API emulator (no cluster runs here: the tests play the Job controller,
running each index's pod command as a local process); and that pod command on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from fnserve.batch.job import JobSpec
from fnserve.cli.main import cli
from fnserve.k8s.api import K8sError
from fnserve.k8s.batch import JOB_NAME_LABEL, ScoringJob, follow, scoring_job, state_of, submit
from tests.k8s.test_validate import KUBERNETES_VERSION
from tests.support.batching import FNS, errors, output, publish_rated, rows, write
from tests.support.k8s_emulator import Cluster, open_cluster

SPEC = JobSpec("rated", "s3://data/in/", "s3://data/out", keys=("id",), version="1").to_json()
EVERYTHING = ScoringJob(
    "rated",
    "registry.example:5000/team/fnserve/rated:3f2a9c1b7d0e",
    SPEC,
    "ab" * 32,
    parallelism=8,
    urls=("s3://data/in/", "s3://data/out"),
    store="s3://models/ckpt",
    store_options={"client_kwargs": {"endpoint_url": "https://minio.ml:9000"}},
    secret="s3-credentials",
    cpus=1.5,
    memory_bytes=3 * 2**30,
    namespace="ml",
)


@pytest.mark.parametrize("job", [ScoringJob("rated", "fnserve/rated:ab", SPEC, "cd" * 32), EVERYTHING])
def test_the_job_is_strictly_valid(job: ScoringJob) -> None:
    manifest = scoring_job(job)
    assert kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_the_job_runs_the_pod_command_in_every_index_hardened_as_training_is() -> None:
    manifest = scoring_job(EVERYTHING)
    spec = manifest["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 8, 8)
    assert spec["backoffLimitPerIndex"] >= 1 and spec["template"]["spec"]["restartPolicy"] == "Never"
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["command"] == ["python", "-m", "fnserve.batch"]
    assert env["FNSERVE_BATCH_JOB"] == SPEC and env["FNSERVE_BATCH_SHARDS"] == "8"
    assert env["FNSERVE_STORE"] == "s3://models/ckpt" and "minio" in env["FNSERVE_STORE_OPTIONS"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert container["resources"]["limits"] == {"cpu": "1500m", "memory": "3072Mi"}
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert manifest["metadata"]["name"] == "fnserve-batch-rated-ababababab"


def test_urls_only_this_machine_has_are_refused() -> None:
    with pytest.raises(ValueError, match=r"/tmp/rows\.parquet is on this machine"):
        scoring_job(ScoringJob("rated", "img", SPEC, "ab" * 32, urls=("/tmp/rows.parquet", "s3://out")))


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with open_cluster("emulator") as opened:
        yield opened


def set_status(cluster: Cluster, name: str, **status: Any) -> None:
    cluster.api.patch("Job", name, {"status": status}, manager="test-job-controller")


def test_submit_creates_leaves_a_running_job_alone_and_replaces_a_failed_one(cluster: Cluster) -> None:
    manifest = scoring_job(ScoringJob("rated", "img", SPEC, "cd" * 32, parallelism=2))
    name = manifest["metadata"]["name"]
    assert submit(cluster.api, manifest) == "created"
    assert cluster.api.get("Job", name)["spec"]["completions"] == 2
    assert submit(cluster.api, manifest) == "running"
    other = scoring_job(ScoringJob("rated", "img", SPEC, "cd" * 32, parallelism=3))
    with pytest.raises(K8sError, match="runs this batch job with 2 indexes, not 3"):
        submit(cluster.api, other)
    set_status(cluster, name, failed=3, conditions=[{"type": "Failed", "status": "True", "message": "x"}])
    assert submit(cluster.api, other) == "restarted"
    replaced = cluster.api.get("Job", name)
    assert replaced["spec"]["completions"] == 3 and state_of(replaced).phase == "running"


def test_follow_waits_for_completion_and_tells_why_a_job_failed(cluster: Cluster) -> None:
    assert cluster.emulator is not None
    manifest = scoring_job(ScoringJob("rated", "img", SPEC, "ef" * 32, parallelism=2))
    name = manifest["metadata"]["name"]
    submit(cluster.api, manifest)
    seen: list[str] = []
    threading.Timer(
        0.3,
        set_status,
        (cluster, name),
        {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]},
    ).start()
    assert follow(cluster.api, name, poll_s=0.05, on_poll=lambda s: seen.append(s.phase)).succeeded == 2
    assert seen[0] == "running" and seen[-1] == "complete"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-1-x", "labels": {JOB_NAME_LABEL: name}},
        "spec": {"containers": [{"name": "batch", "image": "img"}]},
        "status": {"phase": "Failed"},
    }
    cluster.api.apply(pod)
    cluster.emulator.emulator.pod_logs[f"{name}-1-x"] = "fn batch: index 1: no input at s3://data/in/\n"
    failed = [
        {"type": "Failed", "status": "True", "reason": "FailedIndexes", "message": "Job has failed indexes"}
    ]
    set_status(cluster, name, failed=3, failedIndexes="1", conditions=failed)
    with pytest.raises(
        K8sError, match=r"failed \(indexes 1\): Job has failed indexes\n  .*no input at s3://data/in/"
    ):
        follow(cluster.api, name, poll_s=0.05)


# --- fn batch --k8s end to end, and the pod command ----------------------------------------------


@pytest.fixture
def s3_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: str, s3_env: None
) -> dict[str, Any]:
    """A project whose store, input and output are in one S3 bucket (credentials in the environment,
    as a Secret gives them to the pods); a kubeconfig is not set yet."""
    options = {"client_kwargs": {"endpoint_url": s3_server}}
    bucket = f"batch-{os.urandom(4).hex()}"
    s3 = fsspec.filesystem("s3", **options)
    s3.mkdir(bucket)
    publish_rated(f"s3://{bucket}/store", tmp_path / "scratch", options=options)
    s3.pipe(
        f"{bucket}/in/rows.parquet",
        write(rows(230, bad_every=23), tmp_path / "rows.parquet", "parquet", row_group_size=50).read_bytes(),
    )
    shutil.copytree(FNS / "rated", tmp_path / "functions" / "rated")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FNSERVE_STORE", f"s3://{bucket}/store")
    monkeypatch.setenv("FNSERVE_STORE_OPTIONS", f'{{"client_kwargs": {{"endpoint_url": "{s3_server}"}}}}')
    monkeypatch.setenv("FNSERVE_CACHE", str(tmp_path / "cache"))
    for key in ("KUBECONFIG", "FNSERVE_K8S_NAMESPACE"):
        monkeypatch.delenv(key, raising=False)
    return {"bucket": bucket, "s3": s3, "root": tmp_path}


def batch_k8s(project: dict[str, Any], *extra: str) -> Any:
    bucket = project["bucket"]
    args = [
        "batch",
        "rated",
        "--input",
        f"s3://{bucket}/in/",
        "--output",
        f"s3://{bucket}/out",
        "--key",
        "id",
    ]
    args += ["--part-rows", "50", "--k8s", "--parallelism", "2", "--image", "reg/fnserve/rated:ab", *extra]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def run_index(manifest: dict[str, Any], index: int, project: Path) -> subprocess.CompletedProcess[str]:
    """What a pod of the Job runs, here: its command with its environment (and this machine's
    credentials, as the Secret would give them)."""
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
    env.update(
        FNSERVE_PROJECT=str(project),
        JOB_COMPLETION_INDEX=str(index),
        FNSERVE_CACHE=str(project / f"pod-{index}"),
    )
    return subprocess.run(
        [sys.executable, *container["command"][1:]], env=env, capture_output=True, text=True, timeout=120
    )


def test_dry_run_prints_the_job_and_writes_nothing(s3_project: dict[str, Any]) -> None:
    result = batch_k8s(s3_project, "--dry-run")
    assert result.exit_code == 0, result.output
    (manifest,) = [doc for doc in yaml.safe_load_all(result.output) if doc]
    assert kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    env = {e["name"]: e["value"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (
        JobSpec.from_json(env["FNSERVE_BATCH_JOB"]).version == "1"
    )  # latest, resolved: every index scores v1
    assert not s3_project["s3"].exists(f"{s3_project['bucket']}/out")


def test_the_job_applied_followed_and_its_indexes_run_as_pods_would(
    s3_project: dict[str, Any], cluster: Cluster
) -> None:
    assert cluster.emulator is not None
    root = s3_project["root"]
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: emu\n"
        f"clusters: [{{name: emu, cluster: {{server: '{cluster.emulator.url}'}}}}]\n"
        "users: [{name: me, user: {token: abc}}]\n"
        "contexts: [{name: emu, context: {cluster: emu, user: me, namespace: ns}}]\n"
    )
    os.environ["KUBECONFIG"] = str(kubeconfig)
    ran: list[subprocess.CompletedProcess[str]] = []

    def job_controller() -> None:
        deadline = time.monotonic() + 60
        while not cluster.emulator.objects("Job") and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
        ((name, manifest),) = cluster.emulator.objects("Job").items()  # type: ignore[union-attr]
        ran.extend(run_index(manifest, index, root) for index in (1, 0))
        set_status(cluster, name, succeeded=2, conditions=[{"type": "Complete", "status": "True"}])

    controller = threading.Thread(target=job_controller)
    controller.start()
    try:
        result = batch_k8s(s3_project)
    finally:
        controller.join()
        del os.environ["KUBECONFIG"]
    assert [r.returncode for r in ran] == [0, 0], [r.stderr[-2000:] for r in ran]
    assert "index 1 done: 100 rows" in ran[0].stdout and "the job is complete" in ran[1].stdout
    assert result.exit_code == 0, result.output
    assert "created in namespace ns" in result.output and "230" in result.output
    here = CliRunner().invoke(
        cli,
        [
            "batch",
            "rated",
            "--input",
            str(root / "rows.parquet"),
            "--output",
            "here",
            "--key",
            "id",
            "--part-rows",
            "50",
        ],
    )
    assert here.exit_code == 0, here.output
    s3, bucket = s3_project["s3"], s3_project["bucket"]
    s3.get(f"{bucket}/out", str(root / "cluster"), recursive=True)
    assert output(root / "cluster").equals(output(root / "here"))
    assert errors(root / "cluster").equals(errors(root / "here"))
    again = batch_k8s(s3_project)  # complete: nothing applied again
    assert (
        again.exit_code == 0 and "created" not in again.output and len(cluster.emulator.objects("Job")) == 1
    )


def test_the_pod_command_refuses_another_jobs_output_and_says_what_it_lacks(tmp_path: Path) -> None:
    store = publish_rated(f"file://{tmp_path}/store", tmp_path / "scratch")
    write(rows(60), tmp_path / "in.parquet", "parquet", row_group_size=20)
    shutil.copytree(FNS / "rated", tmp_path / "functions" / "rated")
    spec = JobSpec("rated", str(tmp_path / "in.parquet"), str(tmp_path / "out"), keys=("id",), part_rows=20)
    env = {
        **os.environ,
        "FNSERVE_STORE": store.root,
        "FNSERVE_PROJECT": str(tmp_path),
        "FNSERVE_CACHE": str(tmp_path / "c"),
    }
    env.update(FNSERVE_BATCH_JOB=spec.to_json(), FNSERVE_BATCH_SHARDS="3", JOB_COMPLETION_INDEX="2")
    command = [sys.executable, "-m", "fnserve.batch"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "index 2 of 3" in first.stdout and "index 2 done: 20 rows" in first.stdout
    predict = tmp_path / "functions" / "rated" / "predict.py"
    predict.write_text(
        predict.read_text().replace("* model + day", "* model + day + 1")
    )  # another image's code
    other = subprocess.run(
        command, env={**env, "JOB_COMPLETION_INDEX": "0"}, capture_output=True, text=True, timeout=120
    )
    assert other.returncode == 1 and "it differs in the function's code" in other.stderr
    missing = subprocess.run(
        command,
        env={k: v for k, v in env.items() if k != "FNSERVE_BATCH_JOB"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "FNSERVE_BATCH_JOB is not set" in missing.stderr

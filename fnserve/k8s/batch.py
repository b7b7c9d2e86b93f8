"""``fn batch --k8s``: a batch job as a Kubernetes Indexed Job, and the logic that applies and follows it.

The Job runs the function's image with ``python -m fnserve.batch`` (:mod:`fnserve.batch.__main__`)
as its command: ``parallelism`` indexes (completions equal parallelism), index ``i`` scoring the
parts ``part.index % parallelism == i`` of the input and committing each with its marker in the
output; the job's description travels as JSON in ``FNSERVE_BATCH_JOB``, storage credentials come
from a Secret (``envFrom``) as for training, and the pods are hardened as training's are. An index
that fails is retried on its own (``backoffLimitPerIndex``) and resumes from its parts' markers.
The Job's name is derived from the job's fingerprint: the same job is the same Job.

>>> job = scoring_job(ScoringJob("recs", "fnserve/recs:3f2a", '{"function": "recs"}', "0123456789abcdef",
...                              parallelism=4, urls=("s3://in/rows", "s3://out/scores")))
>>> job["metadata"]["name"], job["spec"]["completionMode"], job["spec"]["completions"]
('fnserve-batch-recs-0123456789', 'Indexed', 4)
>>> job["spec"]["template"]["spec"]["containers"][0]["command"]
['python', '-m', 'fnserve.batch']
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from fnserve.batch.job import JobSpec
from fnserve.k8s import names
from fnserve.k8s.api import K8sApi, K8sError
from fnserve.k8s.jobs import job_container
from fnserve.k8s.spec import is_local
from fnserve.k8s.workload import pod_security
from fnserve.project import ProjectSettings

JOB_ENV, SHARDS_ENV = "FNSERVE_BATCH_JOB", "FNSERVE_BATCH_SHARDS"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods
_LOCAL_SCHEMES = ("", "file", "memory")
RETRIES_PER_INDEX = 2


@dataclass(frozen=True)
class ScoringJob:
    function: str
    image: str  # the function's image, registry included when the cluster pulls from one
    job: str  # the batch job's description (fnserve.batch.job.JobSpec as JSON)
    fingerprint: str  # the job's fingerprint: names the Job
    parallelism: int = 4  # indexes, all running at once where the cluster has room
    urls: tuple[str, ...] = ()  # input and output: must be reachable from the cluster
    store: str | None = None  # checkpoint store URL; None: the image's own (baked) store
    store_options: Mapping[str, Any] = field(default_factory=dict)  # fsspec options (no secrets)
    secret: str | None = None  # a Secret whose keys become environment variables (credentials)
    cpus: float | None = None
    memory_bytes: int | None = None
    namespace: str | None = None


@dataclass(frozen=True)
class JobState:
    """What the Job controller says of a Job."""

    phase: str  # "running", "complete" or "failed"
    succeeded: int  # indexes done
    failed: int  # pods failed (retries included)
    completions: int
    message: str = ""  # why it failed, from its condition
    failed_indexes: str = ""  # e.g. "1,3"


def job_name(function: str, fingerprint: str) -> str:
    return names.dns_name("fnserve-batch", function, fingerprint[:10])


def scoring_job(job: ScoringJob) -> dict[str, Any]:
    """The ``batch/v1`` Indexed Job (a ValueError names a URL the cluster cannot reach)."""
    if job.parallelism < 1:
        raise ValueError(f"--parallelism must be at least 1, got {job.parallelism}")
    check_reachable(job.urls)
    env = [
        {"name": "FNSERVE_PROJECT", "value": "/srv"},
        {"name": JOB_ENV, "value": job.job},
        {"name": SHARDS_ENV, "value": str(job.parallelism)},
    ]
    if job.store:
        env.append({"name": "FNSERVE_STORE", "value": job.store})
        if job.store_options:
            env.append(
                {
                    "name": "FNSERVE_STORE_OPTIONS",
                    "value": json.dumps(dict(job.store_options), sort_keys=True),
                }
            )
    command = ["python", "-m", "fnserve.batch"]
    container = job_container("batch", job.image, command, env, job.secret, job.cpus, job.memory_bytes)
    labels = _labels(job)
    metadata: dict[str, Any] = {"name": job_name(job.function, job.fingerprint), "labels": labels}
    if job.namespace:
        metadata["namespace"] = job.namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": job.parallelism,
            "parallelism": job.parallelism,
            "backoffLimitPerIndex": RETRIES_PER_INDEX,  # a failed index is retried alone, and resumes
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}}],  # the checkpoint cache
                },
            },
        },
    }


def check_reachable(urls: tuple[str, ...]) -> None:
    """A ValueError naming the first URL only this machine can reach (a pod could not)."""
    for url in urls:
        if urlsplit(url).scheme in _LOCAL_SCHEMES:
            raise ValueError(
                f"{url} is on this machine: a cluster needs input and output URLs it can reach "
                "(s3://, gs://, hdfs://, ...)"
            )


def render_batch(
    settings: ProjectSettings,
    spec: JobSpec,
    *,
    fingerprint: str,
    version: int | None,
    image: str,
    parallelism: int,
    secret: str | None = None,
    cpus: float | None = None,
    memory_bytes: int | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The Indexed Job running ``spec`` in ``image``: its checkpoint version pinned to ``version``,
    the one resolved when the job started (every index scores with it, whatever is published
    meanwhile), and the project's store unless only this machine has it (then the image's own)."""
    remote = not is_local(settings.store)
    return scoring_job(
        ScoringJob(
            function=spec.function,
            image=image,
            job=replace(spec, version=None if version is None else str(version)).to_json(),
            fingerprint=fingerprint,
            parallelism=parallelism,
            urls=(spec.input, spec.output),
            store=settings.store if remote else None,
            store_options=dict(settings.storage_options) if remote else {},
            secret=secret,
            cpus=cpus,
            memory_bytes=memory_bytes,
            namespace=namespace,
        )
    )


def state_of(obj: Mapping[str, Any]) -> JobState:
    """A Job object's state, from its status and conditions."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    phase = "failed" if failed else "complete" if "Complete" in conditions else "running"
    return JobState(
        phase=phase,
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        completions=int((obj.get("spec") or {}).get("completions") or 0),
        message=str((failed or {}).get("message") or (failed or {}).get("reason") or ""),
        failed_indexes=str(status.get("failedIndexes") or ""),
    )


def submit(api: K8sApi, manifest: Mapping[str, Any], *, gone_s: float = 60.0) -> str:
    """Apply the Job: ``"created"``; ``"running"`` if it runs already (the same job, left alone);
    ``"restarted"`` if it had finished (failed, or done with parts missing): it is replaced, and
    its indexes resume from the parts done."""
    name = manifest["metadata"]["name"]
    existing = api.get("Job", name)
    if existing is not None:
        state = state_of(existing)
        wanted = int(manifest["spec"]["completions"])
        if state.phase == "running":
            if state.completions != wanted:
                raise K8sError(
                    f"Job {name} runs this batch job with {state.completions} indexes, not {wanted}: "
                    f"wait for it, or delete it (kubectl delete job {name}) and run again"
                )
            return "running"
        api.delete("Job", name)
        deadline = time.monotonic() + gone_s
        while api.get("Job", name) is not None:  # a Job's name is free once it is gone
            if time.monotonic() > deadline:
                raise K8sError(f"Job {name} was deleted but is still there after {gone_s:.0f} s")
            time.sleep(0.5)
    api.apply(manifest)
    return "restarted" if existing is not None else "created"


def follow(
    api: K8sApi,
    name: str,
    *,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    on_poll: Callable[[JobState], None] | None = None,
) -> JobState:
    """Wait for the Job to complete; a K8sError says why it failed (with its failed pods' last log
    lines), or that it took longer than ``timeout_s``."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        obj = api.get("Job", name)
        if obj is None:
            raise K8sError(f"Job {name} is gone (deleted while it ran?)")
        state = state_of(obj)
        if on_poll is not None:
            on_poll(state)
        if state.phase == "complete":
            return state
        if state.phase == "failed":
            indexes = f" (indexes {state.failed_indexes})" if state.failed_indexes else ""
            raise K8sError(
                f"Job {name} failed{indexes}: {state.message or 'see its pods'}{_failed_logs(api, name)}"
            )
        if deadline is not None and time.monotonic() > deadline:
            raise K8sError(f"Job {name} is still running after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _failed_logs(api: K8sApi, name: str, lines: int = 5) -> str:
    pods, _ = api.select("Pod", {JOB_NAME_LABEL: name})
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    said = []
    for pod in failed[:2]:
        pod_name = pod["metadata"]["name"]
        try:
            tail = api.log(pod_name, tail=lines)
        except K8sError:
            continue
        if tail:
            said.append(f"\n  {pod_name}: " + "\n  ".join(tail))
    return "".join(said)


def _labels(job: ScoringJob) -> dict[str, str]:
    return {
        names.NAME_LABEL: names.label_value("function name", job.function),
        names.COMPONENT_LABEL: "batch",
        names.MANAGED_LABEL: names.MANAGED_BY,
        names.FUNCTION_LABEL: job.function,
    }

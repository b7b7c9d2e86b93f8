"""Training as a Kubernetes Job, or a CronJob for scheduled retraining: manifests as data.

The Job runs the function's image with ``train.py`` as its command, exactly as
``fn train NAME --in-container`` does here: data and store passed as URLs, credentials from
a Secret (``envFrom``: storage keys such as ``AWS_SECRET_ACCESS_KEY``, and a database's
``PGUSER``/``PGPASSWORD`` or ``MYSQL_PWD``, never in the data URL), non-root, read-only root
file system with ``/tmp`` on an emptyDir, CPU and memory requests equal to the limits, removed a
day after it finishes.

>>> job = training_job(TrainingJob("recs", "registry.example/fnserve/recs:3f2a9c1b7d0e", "s3://models/ckpt"))
>>> job["kind"], job["spec"]["template"]["spec"]["containers"][0]["command"]
('Job', ['python', '/srv/functions/recs/train.py'])
>>> nightly = training_cronjob(TrainingJob("recs", "fnserve/recs:latest", "s3://m"), schedule="0 3 * * *")
>>> nightly["kind"], nightly["spec"]["schedule"]
('CronJob', '0 3 * * *')
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fnserve.gateway.schedule import parse_schedule
from fnserve.k8s import names
from fnserve.k8s.workload import container_security, pod_security
from fnserve.runtime.databases import CREDENTIAL_VARIABLES, DatabaseSource, DataSourceError, is_database_url

_NAME_MAX = 63
_LOCAL_SCHEMES = ("", "file", "memory")


@dataclass(frozen=True)
class TrainingJob:
    function: str
    image: str  # full image reference, registry included when the cluster pulls from one
    store: str  # checkpoint store URL the cluster can reach (s3://, gs://, hdfs://, ...)
    data: str | None = None  # training data URL (fsspec or a database); None: train.py generates its data
    store_options: Mapping[str, Any] = field(default_factory=dict)  # fsspec options (no secrets)
    secret: str | None = None  # a Secret whose keys become environment variables (credentials)
    cpus: float | None = None
    memory_bytes: int | None = None
    namespace: str | None = None
    suffix: str = ""  # makes the Job's name unique per run, e.g. the image tag
    deadline_s: int | None = None  # activeDeadlineSeconds: give up after this long


def training_job(job: TrainingJob) -> dict[str, Any]:
    """A ``batch/v1`` Job that trains once and publishes one new checkpoint version."""
    name = _name("fnserve-train", job.function, job.suffix)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(name, job),
        "spec": _job_spec(job),
    }


def training_cronjob(job: TrainingJob, *, schedule: str) -> dict[str, Any]:
    """A ``batch/v1`` CronJob retraining on ``schedule`` (cron syntax, checked as the gateway's
    scheduler checks it: :func:`fnserve.gateway.schedule.parse_schedule`), one run at a time."""
    parse_schedule(schedule, "schedule")
    name = _name("fnserve-train", job.function, "")
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(name, job),
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",  # two trainings would race to publish the same version
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": _labels(job)}, "spec": _job_spec(job)},
        },
    }


def _job_spec(job: TrainingJob) -> dict[str, Any]:
    for what, url in (("store", job.store), ("data", job.data or "s3://")):
        if urlsplit(url).scheme in _LOCAL_SCHEMES:
            raise ValueError(
                f"the training {what} {url} is on this machine: a cluster needs a URL it can reach "
                "(s3://, gs://, hdfs://, ...)"
            )
    if job.data and is_database_url(job.data):
        _check_database(job.data)
    env = [
        {"name": "FNSERVE_FUNCTION", "value": job.function},
        {"name": "FNSERVE_PROJECT", "value": "/srv"},
        {"name": "FNSERVE_STORE", "value": job.store},
    ]
    if job.store_options:
        env.append({"name": "FNSERVE_STORE_OPTIONS", "value": json.dumps(job.store_options, sort_keys=True)})
    if job.data:
        env.append({"name": "FNSERVE_DATA", "value": job.data})
    command = ["python", f"/srv/functions/{job.function}/train.py"]
    container = job_container("train", job.image, command, env, job.secret, job.cpus, job.memory_bytes)
    spec: dict[str, Any] = {
        "backoffLimit": 1,
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "metadata": {"labels": _labels(job)},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": pod_security(),
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
            },
        },
    }
    if job.deadline_s:
        spec["activeDeadlineSeconds"] = job.deadline_s
    return spec


def _check_database(url: str) -> None:
    """A database source the Job can use: on a host the cluster reaches, its password not in the
    URL (the Job would hold it in plain text; the Secret is where credentials go)."""
    try:
        source = DatabaseSource.parse(url)
    except DataSourceError as exc:
        raise ValueError(exc.message) from None
    if source.on_loopback:
        raise ValueError(
            f"the training data {source.shown} is on this machine: "
            "a cluster needs a database host it can reach"
        )
    if source.has_password:
        names = " and ".join(CREDENTIAL_VARIABLES[source.kind])
        raise ValueError(
            f"the training data {source.shown} has a password in its URL, which the Job would show in "
            f"plain text: leave it out and put {names} in the Secret (--secret NAME, [k8s] secret)"
        )


def job_container(
    name: str,
    image: str,
    command: list[str],
    env: list[dict[str, str]],
    secret: str | None,
    cpus: float | None,
    memory_bytes: int | None,
) -> dict[str, Any]:
    """The one container of a Job run in a function's image (training, batch scoring): hardened,
    ``/tmp`` an emptyDir, the store's credentials from ``secret``, requests equal to limits."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    limits = resources(cpus, memory_bytes)
    if limits:
        container["resources"] = {"requests": limits, "limits": limits}
    return container


def resources(cpus: float | None, memory_bytes: int | None) -> dict[str, str]:
    """A Job container's requests (equal to its limits): CPU in millicores, memory in MiB.

    >>> resources(2, 3 * 2**30), resources(None, None)
    ({'cpu': '2000m', 'memory': '3072Mi'}, {})
    """
    found = {}
    if cpus is not None:
        found["cpu"] = f"{round(cpus * 1000)}m"
    if memory_bytes is not None:
        found["memory"] = f"{-(-memory_bytes // 2**20)}Mi"
    return found


def _metadata(name: str, job: TrainingJob) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": _labels(job)}
    if job.namespace:
        metadata["namespace"] = job.namespace
    return metadata


def _labels(job: TrainingJob) -> dict[str, str]:
    return {
        names.NAME_LABEL: job.function,
        names.COMPONENT_LABEL: "training",
        names.MANAGED_LABEL: names.MANAGED_BY,
    }


def _name(prefix: str, function: str, suffix: str) -> str:
    """A DNS-1123 name within 63 characters: the function's part is shortened, never the suffix."""
    tail = f"-{suffix}" if suffix else ""
    room = _NAME_MAX - len(prefix) - 1 - len(tail)
    core = re.sub(r"[^a-z0-9-]", "-", function.lower())[:room].strip("-")
    return f"{prefix}-{core}{tail}"

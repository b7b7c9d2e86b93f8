"""``fn train --k8s-job``: the Kubernetes Job (or CronJob) that trains a function in its image.

manifest = render_training(settings, "recs", "fnserve/recs:3f2a9c1b", cpus=2, schedule="0 3 * * *")
"""

from __future__ import annotations

from typing import Any

from fnserve.k8s.jobs import TrainingJob, training_cronjob, training_job
from fnserve.project import ProjectSettings


def render_training(
    settings: ProjectSettings,
    name: str,
    image: str,
    *,
    data: str | None = None,
    cpus: float | None = None,
    memory_bytes: int | None = None,
    schedule: str | None = None,
    secret: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The Kubernetes Job (or, with ``schedule``, CronJob) that trains ``name`` from ``image``."""
    job = TrainingJob(
        function=name,
        image=image,
        store=settings.store,
        data=data,
        store_options=settings.storage_options,
        secret=secret,
        cpus=cpus,
        memory_bytes=memory_bytes,
        namespace=namespace,
        suffix=image.rsplit(":", 1)[-1][:12] if ":" in image.rsplit("/", 1)[-1] else "",
    )
    try:
        return training_cronjob(job, schedule=schedule) if schedule else training_job(job)
    except ValueError as exc:
        raise ValueError(str(exc)) from None

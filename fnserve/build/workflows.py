"""What `fn run`, `fn train --in-container` and `fn train --k8s-job` do, end to end.

Each takes settings and choices, builds the function's image when its content tag is missing
(a no-op otherwise), and carries out one container plan through the engine.

    running = serve_function(settings, "recs", engine, port=8080, on_output=print)
    version = train_function(settings, "recs", engine, TrainOptions(cpus=2), on_output=print)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fnserve.build import BuildError
from fnserve.build.containers import (
    StoreAccess,
    data_access,
    local_user,
    serving_spec,
    store_access,
    training_spec,
)
from fnserve.build.images import BuildResult, build_image, prepare_build
from fnserve.build.plan import LABEL_PREFIX
from fnserve.build.running import RunningContainer, free_port, start_serving, train_in_container
from fnserve.docker_engine import DockerEngine
from fnserve.k8s.jobs import TrainingJob, training_cronjob, training_job
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import CheckpointStore

Output = Callable[[str], None]


@dataclass(frozen=True)
class TrainOptions:
    data: str | None = None  # training data URL (Parquet); None: train.py generates its data
    cpus: float | None = None
    memory_bytes: int | None = None
    network: str | None = None  # None: the default bridge, or the host's when the store is on loopback


def ensure_image(settings: Settings, name: str, engine: DockerEngine, on_output: Output) -> BuildResult:
    """The function's image for its current sources: built if missing, reused if not."""
    plan = prepare_build(settings, name, engine, on_output=on_output)
    result = build_image(plan, engine, on_output=on_output)
    if not result.reused:
        on_output(f"built {plan.image} in {result.seconds:.1f} s")
    return result


def serve_function(
    settings: Settings,
    name: str,
    engine: DockerEngine,
    *,
    port: int,
    network: str | None = None,
    wait_s: float = 180.0,
    on_output: Output,
) -> RunningContainer:
    """Start ``fnserve/<name>:latest`` (built first when missing) and wait until it is ready.

    The image last built is what runs, baked or not; a note says when the function's sources
    have changed since.
    """
    plan = prepare_build(settings, name, engine, on_output=on_output)
    image = engine.image(plan.latest)
    if image is None:
        image = build_image(plan, engine, on_output=on_output).image
    elif _revision(image.labels) != plan.digest and not image.labels.get(LABEL_PREFIX + "checkpoint-baked"):
        on_output(
            f"note: functions/{name} changed since {plan.latest} was built: `fn build {name}` updates it"
        )
    if image.labels.get(LABEL_PREFIX + "checkpoint-baked"):
        access = StoreAccess()  # the image holds its own store
    else:
        access = store_access(settings.store, settings.storage_options, os.environ, writable=False)
    network = network or ("host" if access.loopback else None)
    if network == "host" and not port:
        port = free_port()
    spec = serving_spec(image.id, name, access, port=port, network=network)
    tag = next((t for t in image.tags if t != plan.latest), plan.latest)
    on_output(f"starting {tag}" + (" on the host's network" if network == "host" else ""))
    return start_serving(engine, spec, wait_s=wait_s)


def _revision(labels: Any) -> str:
    return str(labels.get("org.opencontainers.image.revision", ""))


def train_function(
    settings: Settings, name: str, engine: DockerEngine, options: TrainOptions, *, on_output: Output
) -> int:
    """Run ``train.py`` in the function's image; returns the checkpoint version it published."""
    built = ensure_image(settings, name, engine, on_output)
    if built.plan.labels[LABEL_PREFIX + "trainable"] != "true":
        raise BuildError(f"function {name!r} has no train.py (expected functions/{name}/train.py)")
    store = store_access(settings.store, settings.storage_options, os.environ, writable=True)
    data = data_access(options.data, os.environ)
    network = options.network or ("host" if store.loopback or data.loopback else None)
    spec = training_spec(
        built.plan.image,
        name,
        store,
        data,
        cpus=options.cpus,
        memory_bytes=options.memory_bytes,
        network=network,
        user=local_user(store),
    )
    checkpoints = CheckpointStore(
        settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
    )
    checkpoint = next(iter(built.plan.checkpoints), name)
    on_output(f"training {name} in {built.plan.image}")
    return train_in_container(engine, spec, checkpoints, checkpoint, on_output=on_output)


def render_training(
    settings: Settings,
    name: str,
    image: str,
    options: TrainOptions,
    *,
    schedule: str | None = None,
    secret: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The Kubernetes Job (or, with ``schedule``, CronJob) that trains ``name`` from ``image``."""
    job = TrainingJob(
        function=name,
        image=image,
        store=settings.store,
        data=options.data,
        store_options=settings.storage_options,
        secret=secret,
        cpus=options.cpus,
        memory_bytes=options.memory_bytes,
        namespace=namespace,
        suffix=image.rsplit(":", 1)[-1][:12] if ":" in image.rsplit("/", 1)[-1] else "",
    )
    try:
        return training_cronjob(job, schedule=schedule) if schedule else training_job(job)
    except ValueError as exc:
        raise BuildError(str(exc)) from None

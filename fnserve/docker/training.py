"""``fn train --in-container``: train.py in the function's image, once, then the container goes.

    version = train_function(settings, "recs", engine, TrainOptions(cpus=2), on_output=print)

A training container is "born to do its job, then it dies": it is removed however it ends
(success, failure, Ctrl-C), and a failed run publishes nothing (a version exists only once its
manifest is written, last).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from fnserve.docker.containers import data_access, local_user, store_access, training_spec
from fnserve.docker_engine import ContainerSpec, DockerEngine
from fnserve.images import BuildError
from fnserve.images.builds import ensure_image
from fnserve.images.labels import TRAINABLE_LABEL
from fnserve.project import ProjectSettings
from fnserve.runtime.errors import CheckpointError
from fnserve.runtime.redact import redact_url
from fnserve.runtime.store import CheckpointStore

Output = Callable[[str], None]


@dataclass(frozen=True)
class TrainOptions:
    data: str | None = None  # training data URL (Parquet); None: train.py generates its data
    cpus: float | None = None
    memory_bytes: int | None = None
    network: str | None = None  # None: the default bridge, or the host's when the store is on loopback


def train_function(
    settings: ProjectSettings, name: str, engine: DockerEngine, options: TrainOptions, *, on_output: Output
) -> int:
    """Run ``train.py`` in the function's image; returns the checkpoint version it published."""
    built = ensure_image(settings, name, engine, on_output)
    if built.plan.labels[TRAINABLE_LABEL] != "true":
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


def train_in_container(
    engine: DockerEngine,
    spec: ContainerSpec,
    store: CheckpointStore,
    checkpoint: str,
    *,
    on_output: Callable[[str], None],
) -> int:
    """Run a training container to its end, output streaming; returns the version it published."""
    before = _latest(store, checkpoint)
    container = engine.run(spec)
    try:
        for line in engine.logs(container, follow=True):
            on_output(line)
        code = engine.wait(container)
    finally:
        engine.remove(container)
    if code != 0:
        killed = " (killed: out of memory? raise --memory)" if code == 137 else ""
        raise BuildError(
            f"training {checkpoint!r} in {spec.image} failed (exit code {code}){killed}; "
            "nothing was published"
        )
    after = _latest(store, checkpoint)
    if after is None or after == before:
        raise BuildError(f"training {checkpoint!r} in {spec.image} finished but published no new version")
    return after


def _latest(store: CheckpointStore, checkpoint: str) -> int | None:
    try:
        return store.latest(checkpoint)
    except CheckpointError as exc:
        raise BuildError(f"cannot read the store {redact_url(store.root)}: {exc}") from None

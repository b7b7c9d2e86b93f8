"""``fn train --in-container``: train.py in the function's image, once, then the container goes.

    version = train_function(settings, "recs", engine, TrainOptions(cpus=2), on_output=print)

A training container is "born to do its job, then it dies": it is removed however it ends
(success, failure, Ctrl-C), and a failed run publishes nothing (a version exists only once its
manifest is written, last). The gateway's schedule on the docker target runs ``train_image``: the
image of the deployed version, never a build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from fnserve.docker.containers import data_access, local_user, store_access, training_spec
from fnserve.docker.replicas import project_id
from fnserve.docker_engine import ContainerSpec, DockerEngine, EngineError
from fnserve.images import BuildError
from fnserve.images.builds import ensure_image
from fnserve.images.labels import FUNCTION_LABEL, PROJECT_LABEL, ROLE_LABEL, TRAINABLE_LABEL
from fnserve.project import ProjectSettings
from fnserve.runtime.databases import DataSourceError, check_readable, is_database_url
from fnserve.runtime.errors import CheckpointError
from fnserve.runtime.redact import redact_url
from fnserve.runtime.store import CheckpointStore

Output = Callable[[str], None]


@dataclass(frozen=True)
class TrainOptions:
    data: str | None = None  # training data URL (Parquet, a database); None: train.py generates its data
    cpus: float | None = None
    memory_bytes: int | None = None
    network: str | None = None  # None: the default bridge, or the host's when the store is on loopback


def train_function(
    settings: ProjectSettings, name: str, engine: DockerEngine, options: TrainOptions, *, on_output: Output
) -> int:
    """Run ``train.py`` in the function's image; returns the checkpoint version it published.

    A database source is read here first (one row) when the container reaches what this machine
    does (the default bridge or the host's network), so that a bad one fails before any build.
    """
    if options.data and is_database_url(options.data) and options.network in (None, "bridge", "host"):
        try:
            check_readable(options.data, os.environ)
        except DataSourceError as exc:
            raise BuildError(f"cannot train {name!r}: {exc.message}") from None
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


def train_image(
    settings: ProjectSettings,
    engine: DockerEngine,
    image: str,
    name: str,
    data: str | None,
    *,
    on_output: Output,
    cancel: threading.Event,
) -> int:
    """``train.py`` once in ``image`` (a deployed version's), as the gateway's schedule runs it: no
    build, and a set ``cancel`` kills the container. Returns the checkpoint version it published."""
    info = engine.image(image)
    if info is None:
        raise BuildError(f"image {image} is not in the local Docker engine: `fn build {name}` makes it")
    if info.labels.get(TRAINABLE_LABEL) != "true":
        raise BuildError(f"image {image} has no train.py (expected functions/{name}/train.py when built)")
    labels = {ROLE_LABEL: "train", FUNCTION_LABEL: name}
    going = [c.name for c in engine.list_containers(labels) if c.state == "running"]
    if going:  # an earlier gateway's run, or `fn train --in-container`: two would race to publish
        raise BuildError(f"training container {going[0]} of {name!r} still runs: runs never overlap")
    store = store_access(settings.store, settings.storage_options, os.environ, writable=True)
    data_in = data_access(data, os.environ)
    container = f"fnserve-train-{name}-{secrets.token_hex(3)}"
    spec = training_spec(
        image,
        name,
        store,
        data_in,
        network="host" if store.loopback or data_in.loopback else None,
        user=local_user(store),
        name=container,
    )
    spec = dataclasses.replace(spec, labels={**spec.labels, PROJECT_LABEL: project_id(settings.project_dir)})
    checkpoints = CheckpointStore(
        settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
    )
    done = threading.Event()
    threading.Thread(target=_kill_when, args=(engine, container, cancel, done), daemon=True).start()
    try:
        return train_in_container(engine, spec, checkpoints, name, on_output=on_output)
    except BuildError:
        if cancel.is_set():
            raise BuildError(f"training {name!r} was stopped: the gateway shut down") from None
        raise
    finally:
        done.set()


def _kill_when(engine: DockerEngine, container: str, cancel: threading.Event, done: threading.Event) -> None:
    """Kill the training container once ``cancel`` is set, until its run is ``done``."""
    while not done.wait(0.2):
        if cancel.is_set():
            with contextlib.suppress(EngineError):
                engine.kill(container)

"""Preparing a job: everything is checked, and the output claimed, before any row is scored.

    job = prepare(spec, found, store)                                   # the model in this process
    job = prepare_remote(spec, "http://127.0.0.1:8080", concurrency=8)  # a running fn serve or gateway

In order: the input (its files, its format, its columns against the function's inputs), the
checkpoint version (the function's own, usually ``latest``, resolved now), the batch size, that
the output does not hold the input; then the output folder is claimed — refused, resumed or
started (:meth:`fnserve.batch.job.Output.claim`). The model is loaded, or the server connected,
only once the job runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from fnserve.batch import BatchError
from fnserve.batch.columns import check_columns, served_schema
from fnserve.batch.job import JobSpec, Output, code_digest, fingerprint, identity, storage_options_for
from fnserve.batch.run import Job
from fnserve.batch.scoring import LocalScorer, RemoteScorer, chunk_rows
from fnserve.batch.source import Source
from fnserve.client import Client
from fnserve.runtime.columns import MAX_ROWS
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.loader import FoundFunction
from fnserve.runtime.schema import Schema
from fnserve.runtime.store import CheckpointStore


def prepare(
    spec: JobSpec,
    found: FoundFunction,
    store: CheckpointStore | None,
    *,
    overwrite: bool = False,
    claim: bool = True,
) -> Job:
    """A job scoring ``spec.input`` with ``found``, its model loaded here from ``store``; with
    ``claim`` False, the output is checked but not written (nothing is, then)."""
    root, options = (store.root, store.storage_options) if store is not None else ("file://", {})
    source = Source.open(spec.input, spec.format, storage_options_for(spec.input, root, options))
    columns = _checked(source, found.schema, spec)
    version = _version(found, store, spec.version)
    most = min(found.spec.max_batch_size, MAX_ROWS)
    size = _batch_size(
        spec.batch_size, most, f"{spec.function} takes at most {most} rows per call (max_batch_size)"
    )
    files = [f.to_dict() for f in source.files]
    ident = identity(spec, source.format, files, version, code_digest(found.path.parent))
    output = _output(spec, source, storage_options_for(spec.output, root, options))
    done = output.claim(ident, overwrite=overwrite, write=claim)

    @contextlib.contextmanager
    def scorer() -> Iterator[LocalScorer]:
        served = ServedFunction(found, store, None if version is None else str(version))
        served.load()
        yield LocalScorer(served, size)

    return Job(
        spec,
        source,
        output,
        found.schema,
        fingerprint(ident),
        done,
        size,
        scorer,
        columns,
        version,
        source.total_rows(),
        read_rows=chunk_rows(found.schema, size),
    )


def prepare_remote(
    spec: JobSpec,
    url: str,
    *,
    concurrency: int = 8,
    store_root: str = "file://",
    store_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    claim: bool = True,
) -> Job:
    """A job scoring ``spec.input`` by the function served at ``url`` (``fn serve`` or a gateway)."""
    with Client(url) as client:
        served = client.functions()
    described = next((f for f in served if f.get("name") == spec.function), None)
    if described is None:
        names = ", ".join(str(f.get("name")) for f in served) or "none"
        raise BatchError(f"{url} serves no function {spec.function!r} (it serves: {names})")
    if not described.get("ready", True) and described.get("error"):
        raise BatchError(f"{url}: {spec.function} is not ready: {described['error']}")
    schema = served_schema(described)
    serving = described.get("version")
    if spec.version is not None and str(serving) != spec.version:
        raise BatchError(f"{url} serves version {serving} of {spec.function}, not --version {spec.version}")
    options = dict(store_options or {})
    source = Source.open(spec.input, spec.format, storage_options_for(spec.input, store_root, options))
    columns = _checked(source, schema, spec)
    size = _batch_size(
        spec.batch_size or min(int(described.get("max_batch_size") or 256), MAX_ROWS),
        MAX_ROWS,
        f"a request holds at most {MAX_ROWS} rows",
    )
    files = [f.to_dict() for f in source.files]
    ident = identity(spec, source.format, files, serving, None)  # the code is the server's: unknown
    output = _output(spec, source, storage_options_for(spec.output, store_root, options))
    done = output.claim(ident, overwrite=overwrite, write=claim)
    target = f"{spec.function}@{spec.version}" if spec.version is not None else spec.function

    @contextlib.contextmanager
    def scorer() -> Iterator[RemoteScorer]:
        yield RemoteScorer(url, target, schema, concurrency)

    return Job(
        spec,
        source,
        output,
        schema,
        fingerprint(ident),
        done,
        size,
        scorer,
        columns,
        serving,
        source.total_rows(),
    )


def _checked(source: Source, schema: Schema, spec: JobSpec) -> list[str]:
    """The columns to read, once the input's columns are known to fit (a BatchError if not)."""
    found = source.columns()
    check_columns(schema, found, keys=spec.keys, ignore=spec.ignore, what=source.shown)
    inputs = {f.name for f in schema.inputs}
    return [name for name in found if name in inputs or name in spec.keys]


def _version(found: FoundFunction, store: CheckpointStore | None, wanted: str | None) -> int | None:
    """The checkpoint version that scores the job: ``wanted``, else the function's own, resolved."""
    if found.spec.checkpoint is None:
        if wanted is not None:
            raise BatchError(f"function {found.spec.name!r} has no checkpoint: --version does not apply")
        return None
    if store is None:
        raise BatchError(f"function {found.spec.name!r} needs a checkpoint store")
    return store.resolve(found.spec.checkpoint, wanted or found.spec.version)


def _batch_size(given: int | None, most: int, why: str) -> int:
    if given is None:
        return most
    if given < 1 or given > most:
        raise BatchError(f"--batch-size {given} is out of range: {why}")
    return given


def _output(spec: JobSpec, source: Source, options: Mapping[str, Any]) -> Output:
    output = Output(spec.output, options)
    where = output.fs.unstrip_protocol(output.path).rstrip("/")
    for file in source.files:
        path = source.fs.unstrip_protocol(file.path)
        if path == where or path.startswith(where + "/"):
            raise BatchError(
                f"the output {output.shown} holds the input ({source.shown}): choose another output"
            )
    return output

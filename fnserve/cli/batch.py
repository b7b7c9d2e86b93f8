"""``fn batch``."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import click

from fnserve.batch.files import FORMATS
from fnserve.batch.job import DEFAULT_PART_ROWS, JobSpec
from fnserve.batch.run import Job
from fnserve.batch.summary import Progress, Summary
from fnserve.cli.batch_view import ProgressBar, show_summary
from fnserve.cli.common import console, load_settings, user_errors
from fnserve.project import ProjectSettings, function_dir
from fnserve.runtime.errors import FunctionError
from fnserve.runtime.loader import discover
from fnserve.runtime.store import CheckpointStore


@click.command("batch")
@click.argument("name")
@click.option(
    "--input", "input_url", required=True, metavar="URL", help="The dataset: a file, folder or glob."
)
@click.option(
    "--output", "output_url", required=True, metavar="URL", help="The folder to write the predictions to."
)
@click.option(
    "--key", "keys", multiple=True, metavar="COL", help="Input column copied beside each prediction."
)
@click.option("--ignore", multiple=True, metavar="COL", help="Input column neither scored nor copied.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="The input's format (default: its names').")
@click.option("--version", help="Checkpoint version to score with (default: the function's, usually latest).")
@click.option(
    "--batch-size", type=click.IntRange(1), help="Rows per model call or request (default: max_batch_size)."
)
@click.option(
    "--part-rows",
    type=click.IntRange(1),
    default=DEFAULT_PART_ROWS,
    show_default=True,
    help="Rows per output part.",
)
@click.option(
    "--max-errors", type=click.IntRange(0), help="Stop once more rows than this are bad (default: never)."
)
@click.option("--overwrite", is_flag=True, help="Replace an output folder holding anything but this job.")
@click.option(
    "--url", help="Score with the function served there (fn serve, the gateway), not in this process."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="With --url: requests in flight.",
)
@click.option("--store", help="Checkpoint store URL (default from fn.toml).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON, for scripts.")
@click.option(
    "--k8s", "on_k8s", is_flag=True, help="Run as a Kubernetes Indexed Job in the function's image."
)
@click.option(
    "--parallelism", type=click.IntRange(1), default=4, show_default=True, help="With --k8s: indexes."
)
@click.option("--image", help="With --k8s: the image reference (default: this build's tag).")
@click.option(
    "--secret", help="With --k8s: Secret holding storage credentials (envFrom; default [k8s] secret)."
)
@click.option("--cpus", type=click.FloatRange(min=0.01), help="With --k8s: CPU of each index's pod.")
@click.option("--memory", help="With --k8s: memory of each index's pod, e.g. 4g.")
@click.option(
    "--namespace", help="With --k8s: the namespace (default [k8s] namespace, else the kubeconfig's)."
)
@click.option("--dry-run", is_flag=True, help="With --k8s: print the Job, apply nothing.")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="With --k8s: follow the Job to its end."
)
@user_errors
def batch_command(
    name: str,
    input_url: str,
    output_url: str,
    keys: tuple[str, ...],
    ignore: tuple[str, ...],
    fmt: str | None,
    version: str | None,
    batch_size: int | None,
    part_rows: int,
    max_errors: int | None,
    overwrite: bool,
    url: str | None,
    concurrency: int,
    store: str | None,
    as_json: bool,
    on_k8s: bool,
    **cluster: Any,
) -> None:
    """Score a whole dataset with a function: in parts, resumably, in input order.

    Reads Parquet, Arrow IPC, CSV or JSON lines (a file, a folder or a glob, at any fsspec URL:
    local, s3://, gs://, ...) in bounded batches and writes Parquet parts to the --output folder,
    one row per input row: `row` (the input row's number), the --key columns, the function's
    outputs (`prediction`, or a dict output's keys) and `version`, the checkpoint version that
    scored the row. Without --key, `row` is the key. Bad rows go to <output>/_errors/ with the
    reason; the summary counts them. Columns that do not fit the function's inputs are refused
    before any work. Killed and run again, the same job goes on from the parts it had done; an
    output holding another job is refused unless --overwrite.

    \b
    Examples:
      fn batch recs --input bookings.parquet --output scores/ --key booking_id
      fn batch recs --input 's3://data/day=*/*.csv' --output s3://data/scores/ --max-errors 100
      fn batch recs --input rows.jsonl --output out/ --url http://127.0.0.1:8080 --concurrency 8
      fn batch recs --input s3://data/big/ --output s3://data/scores/ --k8s --parallelism 8
      duckdb -c "select * from 'scores/*.parquet' order by row limit 5"
    """
    settings = load_settings(store=store)
    keys, ignore = tuple(dict.fromkeys(keys)), tuple(dict.fromkeys(ignore))  # each once, in the order given
    spec = JobSpec(name, input_url, output_url, fmt, version, keys, ignore, part_rows, batch_size, max_errors)
    k8s = _K8s.of(cluster, on_k8s)
    if k8s is not None:
        if url is not None:
            raise click.UsageError("--url and --k8s: choose one (the Job scores in its pods)")
        k8s.check(spec)  # before the output is claimed: nothing is written for a Job that cannot run
        done = k8s.run(settings, spec, _prepare(settings, spec, None, 0, overwrite, claim=not k8s.dry_run))
        if done is not None:  # None: a dry run printed the Job, and only that
            show_summary(done, as_json)
        return
    job = _prepare(settings, spec, url, concurrency, overwrite)
    with ProgressBar(name, job) as bar:
        summary = job.run(on_progress=bar.show)
    show_summary(summary, as_json)


def _prepare(
    settings: ProjectSettings,
    spec: JobSpec,
    url: str | None,
    concurrency: int,
    overwrite: bool,
    claim: bool = True,
) -> Job:
    from fnserve.batch.prepare import prepare, prepare_remote

    if url is not None:
        options = dict(settings.storage_options)
        return prepare_remote(
            spec,
            url,
            concurrency=concurrency,
            store_root=settings.store,
            store_options=options,
            overwrite=overwrite,
        )
    try:
        folder = function_dir(settings.project_dir, spec.function)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    found = [f for f in discover([folder]) if f.spec.name == spec.function] if folder.is_dir() else []
    if not found:
        raise FunctionError(
            f"no function {spec.function!r} in {folder} (a predict.py marking it with @predict)"
        )
    store = CheckpointStore(
        settings.store, storage_options=dict(settings.storage_options), cache_dir=settings.cache_dir
    )
    return prepare(spec, found[0], store, overwrite=overwrite, claim=claim)


@dataclass(frozen=True)
class _K8s:
    """What `--k8s` and its options asked for; ``run`` applies the Job and follows it."""

    parallelism: int
    image: str | None
    secret: str | None
    cpus: float | None
    memory: str | None
    namespace: str | None
    dry_run: bool
    wait: bool

    @classmethod
    def of(cls, options: dict[str, Any], on_k8s: bool) -> _K8s | None:
        if not on_k8s:
            given = [
                k for k in ("image", "secret", "cpus", "memory", "namespace", "dry_run") if options.get(k)
            ]
            if given or options.get("parallelism") != 4:
                shown = (given or ["parallelism"])[0].replace("_", "-")
                raise click.UsageError(f"--{shown} needs --k8s")
            return None
        return cls(**options)

    @staticmethod
    def check(spec: JobSpec) -> None:
        from fnserve.k8s.batch import check_reachable

        try:
            check_reachable((spec.input, spec.output))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None

    def run(self, settings: ProjectSettings, spec: JobSpec, job: Job) -> Summary | None:
        from fnserve.k8s.api import K8sApi
        from fnserve.k8s.batch import follow, job_name, render_batch, submit
        from fnserve.k8s.project import load_k8s_settings, resolve_namespace, to_yaml
        from fnserve.runtime.redact import redact_data

        summary = job.status()
        if summary.complete:
            return summary
        flags = {"namespace": self.namespace, "secret": self.secret}
        k8s = load_k8s_settings(settings.project_dir, os.environ, flags)
        namespace = resolve_namespace(k8s, os.environ)
        try:
            manifest = render_batch(
                settings,
                spec,
                fingerprint=job.fingerprint,
                version=job.version,
                image=self.image or _cluster_image(settings, spec.function),
                parallelism=self.parallelism,
                secret=k8s.secret or None,
                cpus=self.cpus,
                memory_bytes=_memory(self.memory),
                namespace=namespace,
            )
        except ValueError as exc:  # a URL only this machine reaches
            raise click.ClickException(str(exc)) from None
        if self.dry_run:
            click.echo(to_yaml([redact_data(manifest, settings.secrets())]), nl=False)
            return None
        api = K8sApi.connect(namespace=namespace, context=k8s.context)
        click.get_current_context().call_on_close(api.close)
        name = job_name(spec.function, job.fingerprint)
        console.print(
            f"[bold]{spec.function}[/]: Job {name} {submit(api, manifest)} in namespace {namespace}"
        )
        if not self.wait:
            console.print(
                f"  follow it with: kubectl -n {namespace} get job {name} -w (or this command again)"
            )
            return summary
        started = time.monotonic()
        with ProgressBar(spec.function, job) as bar:
            follow(
                api, name, on_poll=lambda _: bar.show(_progress(job.status(), job.total_rows, summary.rows))
            )
        done = job.status()
        return dataclasses.replace(
            done, run_rows=done.rows - summary.rows, seconds=time.monotonic() - started
        )


def _progress(summary: Summary, total_rows: int | None, rows_before: int) -> Progress:
    """A Job's progress, as its indexes' markers say it."""
    return Progress(summary.rows, total_rows, 0, 0, summary.errors, summary.parts, rows_before)


def _cluster_image(settings: ProjectSettings, name: str) -> str:
    from fnserve.cli.build import cluster_image

    return cluster_image(settings, name)


def _memory(text: str | None) -> int | None:
    if text is None:
        return None
    from fnserve.docker.containers import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--memory") from None


COMMANDS = [batch_command]

"""``python -m fnserve.batch``: one index of a batch job, as a pod of ``fn batch --k8s`` runs it.

Everything comes from the environment, as the Indexed Job sets it (:mod:`fnserve.k8s.batch`):

    FNSERVE_BATCH_JOB      the job (fnserve.batch.job.JobSpec as JSON)
    FNSERVE_BATCH_SHARDS   how many indexes share the job (default 1)
    JOB_COMPLETION_INDEX   this index (set by Kubernetes; default 0)
    FNSERVE_PROJECT        the folder holding functions/<name>/ (the image's /srv)
    FNSERVE_STORE, FNSERVE_STORE_OPTIONS, credentials   the checkpoint store, as for serving

The index scores its parts of the input in-process, resuming from those already marked done, and
checks that it runs the job its output describes (the same input, function code and version:
an image built from other code is refused). Exit status 0 once its share is done; 1 with the
reason on stderr otherwise, so the Job retries the index or reports it failed.

    FNSERVE_BATCH_JOB='{"function": "recs", "input": "s3://...", "output": "s3://..."}' \\
    JOB_COMPLETION_INDEX=0 FNSERVE_BATCH_SHARDS=4 python -m fnserve.batch
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from fnserve.batch.job import JobSpec
from fnserve.batch.prepare import prepare
from fnserve.batch.summary import Progress
from fnserve.project import function_dir
from fnserve.runtime.errors import FnError
from fnserve.runtime.loader import discover
from fnserve.runtime.redact import register_secrets, scrub
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import CheckpointStore

LOG_EVERY_S = 10.0


def main(environ: Mapping[str, str] = os.environ) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if "FNSERVE_BATCH_JOB" not in environ:
            raise FnError(
                "FNSERVE_BATCH_JOB is not set: it holds the batch job to run (fn batch --k8s sets it)"
            )
        spec = JobSpec.from_json(environ["FNSERVE_BATCH_JOB"])
        index, shards = (
            int(environ.get("JOB_COMPLETION_INDEX", "0")),
            int(environ.get("FNSERVE_BATCH_SHARDS", "1")),
        )
        project = Path(environ.get("FNSERVE_PROJECT", "."))
        settings = Settings.load(project, environ)
        register_secrets(settings.secrets())
        found = [
            f
            for f in discover([function_dir(settings.project_dir, spec.function)])
            if f.spec.name == spec.function
        ]
        if not found:
            raise FnError(
                f"no function {spec.function!r} in {function_dir(settings.project_dir, spec.function)}"
            )
        store = CheckpointStore(
            settings.store, storage_options=dict(settings.storage_options), cache_dir=settings.cache_dir
        )
        job = prepare(spec, found[0], store)
        print(f"fn batch: index {index} of {shards}: {spec.function} over {job.source.shown}", flush=True)
        summary = job.run(index, shards, on_progress=_Log(index))
    except (FnError, ValueError) as exc:
        said = scrub(exc.message if isinstance(exc, FnError) else str(exc))
        print(
            f"fn batch: index {environ.get('JOB_COMPLETION_INDEX', '0')}: {said}",
            file=sys.stderr,
        )
        return 1
    print(
        f"fn batch: index {index} done: {summary.run_rows:,} rows in {summary.seconds:.1f} s "
        f"({summary.rows_per_s:,.0f} rows/s), {summary.errors:,} bad rows in the job so far"
        + (
            f"; the job is complete: {summary.rows:,} rows in {summary.parts} parts"
            if summary.complete
            else ""
        ),
        flush=True,
    )
    return 0


class _Log:
    """A progress line every LOG_EVERY_S seconds (a pod's log is no terminal)."""

    def __init__(self, index: int):
        self.index, self.last = index, time.monotonic()

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            print(
                f"fn batch: index {self.index}: {progress.rows:,} rows, {progress.errors:,} bad", flush=True
            )


if __name__ == "__main__":
    sys.exit(main())

"""``fn batch``: score a whole dataset with a function, in parts, resumably, on one machine or many.

The talk's second kind of caller, "a cron job or something which has a lot of work to do in one
burst", wants throughput, not latency. A job reads the input (Parquet, Arrow IPC, CSV or JSON
lines at any fsspec URL) in bounded record batches, scores them with the function — its model
loaded here by the runtime's own :class:`~fnserve.runtime.function.ServedFunction`, or a running
``fn serve``/gateway over Arrow requests — and writes the predictions in parts, keeping the
input's order, its key columns, each row's number and the model version that scored it:

    files       input files: formats, listing, what identifies their content
    source      the input in parts and batches (Parquet by pyarrow.dataset, row group by row group)
    readers     the other formats' readers: Arrow IPC, CSV (every cell as text), JSON lines
    text        CSV cells to typed columns, with the runtime's own rules for text values
    rows        one batch of input rows: validated, keyed, sliced, sent
    columns     the input's columns against the function's inputs, refused before any work
    scoring     in-process and remote scorers; bad rows set apart from good ones
    job         the job: what identifies it (its fingerprint), its output folder, done parts
    parts       one output part: predictions, bad rows, its marker
    prepare     a job checked and its output claimed, before any row is scored
    run         the pipeline: read, score, write in input order
    stages      the threads a remote job reads ahead and writes behind in
    summary     progress while a job runs, its summary once it stops
    __main__    ``python -m fnserve.batch``: one index of a Kubernetes Indexed Job, in the image

Output layout (``--output URL``, a folder)::

    part-00000-000000.parquet ...    predictions in input order (read the folder as one dataset)
    _errors/part-....parquet         bad rows: row, keys, error, input
    _fnbatch/job.json                what the job is; a run with another fingerprint is refused
    _fnbatch/done/part-....json      one marker per finished part (the commit point)
    _fnbatch/manifest.json           written once every part is done: the parts, joined in order
"""

from __future__ import annotations

from fnserve.runtime.errors import FnError


class BatchError(FnError):
    """A batch job that cannot start or go on: the message says why and what to do."""

    status = 422

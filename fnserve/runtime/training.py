"""What a training script needs from fnserve: where its data is and where its checkpoints go.

``fn train recs`` runs ``functions/recs/train.py`` with ``FNSERVE_FUNCTION``, ``FNSERVE_DATA``
and ``FNSERVE_PROJECT`` set; run by hand, the script falls back to its own defaults::

    from fnserve import Evaluation, TrainContext

    ctx = TrainContext.from_env(default_function="recs")
    model = train(ctx.data)                         # ctx.data: fsspec URL or None
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp)
        ctx.publish(
            tmp,
            metrics={"accuracy": 0.91, "chance": 0.5},
            reference_inputs=train_columns,          # what the model was trained on, by input name
            reference_outputs=model(heldout_columns),  # what it answers on held-out data
            evaluation=Evaluation(                   # held-out data `fn optimize` measures by
                inputs=heldout_columns, labels=heldout["booked"], metrics=("roc_auc", "log_loss")
            ),
            representative={name: train[name][:1000] for name in COLUMNS},  # int8 calibration
        )

The reference (quantile bins, value frequencies, tensor summaries; :mod:`fnserve.runtime.monitor`)
is written into the folder as ``fnserve-reference.json`` before the upload, so the manifest
covers it; the runtime scores live traffic against it. Without one the version is still served.
The evaluation data and the representative sample (:mod:`fnserve.runtime.evaluation`) go into
the folder the same way: ``fn optimize`` evaluates a variant and its base on the held-out rows
(refusing to publish one that loses accuracy) and calibrates full-integer quantization on the
sample. Without them a version is served all the same; only ``fn optimize`` asks for them.

``ctx.read_table()`` reads the data as one Arrow table, whether a Parquet file, a folder of
them, captured traffic (``fn train recs --data <store>/_capture``: the function's inputs and
outputs, as served), or a database table or query (``--data
'postgresql://db.example/analytics?table=bookings'``, credentials in ``PGPASSWORD``; see
:mod:`fnserve.runtime.databases`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds

from fnserve.runtime import databases
from fnserve.runtime import evaluation as evaluation_data
from fnserve.runtime.evaluation import Evaluation
from fnserve.runtime.monitor import reference
from fnserve.runtime.redact import redact_url, register_secrets
from fnserve.runtime.settings import Settings
from fnserve.runtime.spec import check_name
from fnserve.runtime.store import CheckpointStore


@dataclass(frozen=True)
class TrainContext:
    function: str  # the function being trained; its checkpoints are published under this name
    store: CheckpointStore
    data: str | None  # URL of the training data: Parquet (file or folder) at an fsspec URL, or a database
    storage_options: Mapping[str, Any] = field(
        default_factory=dict
    )  # fsspec options for data on the store's protocol
    # PGUSER, PGPASSWORD, MYSQL_PWD of the environment: a database source's credentials (not shown)
    database_credentials: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, default_function: str | None = None
    ) -> TrainContext:
        """Build the context from ``FNSERVE_*`` variables and the project's ``fn.toml``.

        >>> ctx = TrainContext.from_env({"FNSERVE_STORE": "memory://models"}, default_function="recs")
        >>> ctx.store.location(ctx.function)
        'memory://models/recs'
        """
        env = os.environ if environ is None else environ
        function = env.get("FNSERVE_FUNCTION") or default_function
        if not function:
            raise ValueError("no function to train: set FNSERVE_FUNCTION or pass default_function=")
        check_name("function name", function)
        settings = Settings.load(project_dir=env.get("FNSERVE_PROJECT") or Path.cwd(), environ=env)
        store = CheckpointStore(
            settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
        )
        data = env.get("FNSERVE_DATA") or None
        same_place = data is not None and _protocol(data) == _protocol(settings.store)
        options = dict(settings.storage_options) if same_place else {}
        credentials = {}
        if data is not None and databases.is_database_url(data):
            credentials = databases.credentials(data, env)
            # This process's log records hide them from here on, whatever logs them.
            register_secrets(databases.DatabaseSource.parse(data).secrets(env))
        return cls(
            function=function,
            store=store,
            data=data,
            storage_options=options,
            database_credentials=credentials,
        )

    def read_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The training data as one Arrow table: a Parquet file, or a folder of them, hive
        partitions (``key=value/`` folders) included, at any fsspec URL the store's options reach;
        or a database table or query (:func:`fnserve.runtime.databases.read_table`).

        A folder of captured traffic (``<store>/_capture``, see :mod:`fnserve.runtime.capture`)
        reads as the function's inputs and outputs; only this function's rows are taken. Columns
        ``_request_id``, ``_latency_s``, ``_time``, ``version`` and ``date`` come along unless
        ``columns`` names the ones wanted. A database that cannot be read (unreachable, password
        refused, no such table, no rows) raises :class:`~fnserve.runtime.databases.DataSourceError`
        naming the source without its credentials.

        >>> ctx.read_table(["hotel_price", "booked"]).num_rows  # doctest: +SKIP
        2000
        """
        if not self.data:
            raise ValueError(f"no training data given for {self.function!r}: pass --data URL")
        if databases.is_database_url(self.data):
            return databases.read_table(self.data, self.database_credentials, columns)
        filesystem, path = fsspec.core.url_to_fs(self.data, **self.storage_options)
        found = ds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive")
        where = None
        if "function" in found.schema.names:  # a capture root: every function's traffic
            where = ds.field("function") == self.function
        table = found.to_table(filter=where)
        if "function" in table.column_names:
            table = table.drop_columns(["function"])
        return table if columns is None else table.select(list(columns))

    def publish(
        self,
        local_dir: str | Path,
        *,
        metrics: Mapping[str, Any] | None = None,
        reference_inputs: Mapping[str, Any] | None = None,
        reference_outputs: Any = None,
        evaluation: Evaluation | None = None,
        representative: Mapping[str, Any] | None = None,
    ) -> int:
        """Publish the model saved in ``local_dir`` as the function's next version; return it.

        ``reference_inputs`` (training columns by input name) and ``reference_outputs`` (the
        model's outputs on held-out data: one column, or a mapping of named output columns) become
        the version's monitoring reference, written into ``local_dir`` and published with it.
        ``evaluation`` (held-out inputs, labels and the task's metrics) and ``representative``
        (training inputs by input name; a sample of 1000 rows is kept) are written there too, as
        ``fn optimize`` reads them (:mod:`fnserve.runtime.evaluation`).

        >>> ctx.publish(tmp, metrics={"accuracy": 0.91, "chance": 0.5})  # doctest: +SKIP
        published recs version 3 to file:///project/.fnserve/store/recs/3
        3
        """
        metadata = {
            "metrics": {key: _plain(value) for key, value in (metrics or {}).items()},
            "data": redact_url(self.data) if self.data else None,  # a record: no credentials in the store
        }
        if reference_inputs is not None:
            reference.write(Path(local_dir), reference.build(reference_inputs, reference_outputs))
        elif reference_outputs is not None:
            raise ValueError("reference_outputs needs reference_inputs: the inputs the model was trained on")
        evaluation_data.write(Path(local_dir), evaluation, representative)
        version = self.store.publish(self.function, Path(local_dir), metadata=metadata)
        print(
            f"published {self.function} version {version} to "
            f"{redact_url(self.store.location(self.function))}/{version}"
        )
        return version


def _protocol(url: str) -> str:
    return fsspec.core.split_protocol(url)[0] or "file"


def _plain(value: Any) -> Any:
    """A metric as a plain JSON value: tensors and NumPy scalars become numbers, NaN/inf become None."""
    if callable(getattr(value, "numpy", None)):  # TensorFlow and PyTorch eager tensors
        value = value.numpy()
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):  # NumPy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a diverged metric should not cost the finished training run
    return value

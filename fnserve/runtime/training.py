"""What a training script needs from fnserve: where its data is and where its checkpoints go.

``fn train recs`` runs ``functions/recs/train.py`` with ``FNSERVE_FUNCTION``, ``FNSERVE_DATA``
and ``FNSERVE_PROJECT`` set; run by hand, the script falls back to its own defaults::

    from fnserve import TrainContext

    ctx = TrainContext.from_env(default_function="recs")
    model = train(ctx.data)                         # ctx.data: fsspec URL or None
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp)
        ctx.publish(
            tmp,
            metrics={"accuracy": 0.91, "chance": 0.5},
            reference_inputs=train_columns,          # what the model was trained on, by input name
            reference_outputs=model(heldout_columns),  # what it answers on held-out data
        )

The reference (quantile bins, value frequencies, tensor summaries; :mod:`fnserve.runtime.monitor`)
is written into the folder as ``fnserve-reference.json`` before the upload, so the manifest
covers it; the runtime scores live traffic against it. Without one the version is still served.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnserve.runtime.monitor import reference
from fnserve.runtime.redact import redact_url
from fnserve.runtime.settings import Settings
from fnserve.runtime.spec import check_name
from fnserve.runtime.store import CheckpointStore


@dataclass(frozen=True)
class TrainContext:
    function: str  # the function being trained; its checkpoints are published under this name
    store: CheckpointStore
    data: str | None  # fsspec URL of the training data (a Parquet dataset folder or file), if given

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
        return cls(function=function, store=store, data=env.get("FNSERVE_DATA") or None)

    def publish(
        self,
        local_dir: str | Path,
        *,
        metrics: Mapping[str, Any] | None = None,
        reference_inputs: Mapping[str, Any] | None = None,
        reference_outputs: Any = None,
    ) -> int:
        """Publish the model saved in ``local_dir`` as the function's next version; return it.

        ``reference_inputs`` (training columns by input name) and ``reference_outputs`` (the
        model's outputs on held-out data: one column, or a mapping of named output columns) become
        the version's monitoring reference, written into ``local_dir`` and published with it.

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
        version = self.store.publish(self.function, Path(local_dir), metadata=metadata)
        print(
            f"published {self.function} version {version} to "
            f"{redact_url(self.store.location(self.function))}/{version}"
        )
        return version


def _plain(value: Any) -> Any:
    """A metric as a plain JSON value: tensors and NumPy scalars become numbers, NaN/inf become None."""
    if callable(getattr(value, "numpy", None)):  # TensorFlow and PyTorch eager tensors
        value = value.numpy()
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):  # NumPy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a diverged metric should not cost the finished training run
    return value

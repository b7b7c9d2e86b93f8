"""LitServe: the recs checkpoint (id lookups, then the SavedModel) behind a LitAPI, with LitServe's batching.

LitServe has no fixed request format: ``decode_request`` defines it. Here one instance is a
flat JSON object and many are ``{"instances": [...]}`` (TF Serving's row format). With
``max_batch_size > 1`` LitServe gathers requests for up to ``batch_timeout`` and calls
``batch``/``unbatch`` around one ``predict``.

    BENCH_RECS_MODEL=.fnserve/store/recs/2 BENCH_PORT=8300 BENCH_MAX_BATCH=64 \
        .bench/venvs/litserve/bin/python benchmarks/peers/litserve/server.py
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation at run
# time to build the FastAPI endpoint, and a string annotation turns the body into a query field.
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recs_model import COLUMNS, RecsModel  # benchmarks/peers, beside this folder


class RecsAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = RecsModel(os.environ["BENCH_RECS_MODEL"])
        self.sizes: list[int] = []

    def decode_request(self, request: dict[str, Any]) -> dict[str, list[Any]]:
        rows = request.get("instances", [request])
        return {k: [row[k] for row in rows] for k in COLUMNS}

    def batch(self, inputs: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
        self.sizes = [len(x["hotel_id"]) for x in inputs]  # one inference loop per worker: safe
        return {k: list(itertools.chain.from_iterable(x[k] for x in inputs)) for k in COLUMNS}

    def predict(self, x: dict[str, list[Any]]) -> np.ndarray:
        return self.model(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return np.split(output, np.cumsum(self.sizes)[:-1])

    def encode_response(self, output: np.ndarray) -> dict[str, list[float]]:
        return {"predictions": output.tolist()}


if __name__ == "__main__":
    max_batch = int(os.environ.get("BENCH_MAX_BATCH", "1"))
    api = RecsAPI(max_batch_size=max_batch, batch_timeout=float(os.environ.get("BENCH_BATCH_TIMEOUT_S", "0")))
    # fast_queue: ZeroMQ between the HTTP server and the inference worker instead of
    # multiprocessing-manager queues (LitServe's documented setting for throughput).
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30, fast_queue=True)
    server.run(
        host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), generate_client_file=False, log_level="warning"
    )

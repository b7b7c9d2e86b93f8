"""Counts its runs: each call's token is appended, one line per row computed, to the file that
``FNSERVE_TEST_TALLY`` names — the asynchronous calls' restart tests tell from it which calls ran
and how often. ``seconds`` of sleep per model call keep runs in flight for a SIGKILL to cut."""

import os
import time

import numpy as np

from fnserve import predict


@predict(max_batch_size=8, timeout_s=30)
def tally(token: str, seconds: float = 0.0) -> str:
    time.sleep(float(np.max(seconds)))
    path = os.environ.get("FNSERVE_TEST_TALLY")
    if path:
        with open(path, "a") as f:
            f.write("".join(f"{t}\n" for t in token))
    return np.asarray(token, dtype=object)

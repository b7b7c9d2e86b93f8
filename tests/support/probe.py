"""A prober for rollout tests: callers asking ``GET /function/weighted?x=1`` back to back, each
answer kept with its time, value and the version that gave it (``X-Function-Version``)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator

import httpx


@dataclasses.dataclass
class Answer:
    at: float
    status: int
    value: float | None
    version: str


@contextlib.contextmanager
def prober(url: str, threads: int = 4) -> Iterator[list[Answer]]:
    """``threads`` callers asking ``x=1`` back to back until the block ends."""
    answers: list[Answer] = []
    stop = threading.Event()

    def ask() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                response = client.get("/function/weighted", params={"x": 1})
                value = response.json()["predictions"][0] if response.status_code == 200 else None
                answers.append(
                    Answer(
                        time.time(),
                        response.status_code,
                        value,
                        response.headers.get("x-function-version", ""),
                    )
                )

    workers = [threading.Thread(target=ask, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield answers
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)

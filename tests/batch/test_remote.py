"""Jobs against a running ``fn serve`` (a real process on loopback): Arrow requests in flight, each
row labelled with the version that answered it, bad rows told apart as in-process, and the same
output as an in-process job."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fnserve.batch import BatchError
from fnserve.batch.columns import served_schema
from fnserve.batch.job import JobSpec
from fnserve.batch.prepare import prepare, prepare_remote
from fnserve.batch.rows import ArrowRows
from fnserve.batch.scoring import RemoteScorer
from fnserve.client import Client
from fnserve.runtime.store import CheckpointStore
from tests.support.batching import FNS, errors, output, publish_rated, rated, rows, write
from tests.support.serving import Served, start_serve, stop

pytestmark = pytest.mark.slow  # a real fn serve process


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, CheckpointStore]]:
    project = tmp_path_factory.mktemp("serve")
    store = publish_rated(f"file://{project}/store", project / "scratch", weight=2.0)
    running = start_serve(project, FNS / "rated")
    try:
        yield running, store
    finally:
        stop(running)


def remote(url: str, source: Path, out: Path, **options: Any) -> Any:
    spec = JobSpec("rated", str(source), str(out), keys=("id",), part_rows=100, batch_size=16, **options)
    return prepare_remote(spec, url, concurrency=4).run()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_served_function_scores_as_the_in_process_one(tmp_path: Path, served: Any, fmt: str) -> None:
    server, store = served
    source = write(rows(260, bad_every=25), tmp_path / f"in.{fmt}", fmt, row_group_size=50)
    summary = remote(server.url, source, tmp_path / "remote")
    assert (summary.rows, summary.scored, summary.errors, summary.versions) == (260, 250, 10, {"1": 250})
    spec = JobSpec("rated", str(source), str(tmp_path / "here"), keys=("id",), part_rows=100, batch_size=16)
    prepare(spec, rated(), store).run()
    assert output(tmp_path / "remote").equals(output(tmp_path / "here"))
    assert errors(tmp_path / "remote").equals(errors(tmp_path / "here"))
    assert set(errors(tmp_path / "remote").column("error").to_pylist()) == {"day: must be <= 7, got 9"}


def test_rows_the_server_refuses_but_these_checks_pass_are_found_by_halving_requests(served: Any) -> None:
    server, _ = served
    with Client(server.url) as client:
        described = next(f for f in client.functions() if f["name"] == "rated")
    lenient = served_schema(
        {**described, "inputs": [{k: v for k, v in d.items() if k != "le"} for d in described["inputs"]]}
    )
    table = rows(40, bad_every=9).drop(["id", "season"]).to_batches()[0]
    scorer = RemoteScorer(server.url, "rated", lenient, concurrency=2)

    async def score() -> Any:
        async with scorer.connected():
            return await scorer.score(ArrowRows(table, np.arange(40), ("price", "day"), ()))

    scored = asyncio.run(score())
    assert scored.ids.tolist() == [i for i in range(40) if i % 9 != 8]
    assert scored.bad is not None and scored.bad.column("row").to_pylist() == [8, 17, 26, 35]
    assert set(scored.bad.column("error").to_pylist()) == {"day: must be <= 7, got 9"}


def test_what_the_server_cannot_do_is_refused_before_any_work(tmp_path: Path, served: Any) -> None:
    server, _ = served
    source = write(rows(10), tmp_path / "in.parquet", "parquet")
    with pytest.raises(BatchError, match=r"serves no function 'nope' \(it serves: rated\)"):
        prepare_remote(JobSpec("nope", str(source), str(tmp_path / "out")), server.url)
    with pytest.raises(BatchError, match="serves version 1 of rated, not --version 3"):
        prepare_remote(JobSpec("rated", str(source), str(tmp_path / "out"), version="3"), server.url)
    with pytest.raises(BatchError, match="column id is not an input"):
        prepare_remote(JobSpec("rated", str(source), str(tmp_path / "out")), server.url)
    with pytest.raises(
        BatchError, match="--batch-size 20000 is out of range: a request holds at most 10000 rows"
    ):
        prepare_remote(
            JobSpec("rated", str(source), str(tmp_path / "out"), keys=("id",), batch_size=20000), server.url
        )
    assert not (tmp_path / "out").exists()  # nothing written: refused before any work

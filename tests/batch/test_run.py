"""Jobs in-process, end to end: the output keeps the input's order, keys and the scoring version;
bad rows go to the error output; stopped jobs resume to the result of an uninterrupted one; a
folder holding another job is refused, naming what differs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pytest

from fnserve.batch import BatchError
from fnserve.batch.job import JobSpec
from fnserve.batch.prepare import prepare
from fnserve.batch.run import Progress
from fnserve.runtime.store import CheckpointStore
from tests.support.batching import errors, output, publish_rated, rated, rows, write


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return publish_rated(f"file://{tmp_path}/store", tmp_path / "scratch", weight=2.0)


def run(store: CheckpointStore, source: Path | str, out: Path | str, **options: Any) -> Any:
    overwrite = options.pop("overwrite", False)
    on_progress = options.pop("on_progress", None)
    spec = JobSpec("rated", str(source), str(out), keys=("id",), part_rows=100, batch_size=32, **options)
    return prepare(spec, rated(), store, overwrite=overwrite).run(on_progress=on_progress)


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "arrows", "csv", "jsonl"])
def test_every_format_scores_to_the_same_output_in_input_order(
    tmp_path: Path, store: CheckpointStore, fmt: str
) -> None:
    table = rows(350, bad_every=50)
    source = write(table, tmp_path / f"in.{'arrow' if fmt == 'arrows' else fmt}", fmt, row_group_size=60)
    summary = run(store, source, tmp_path / "out")
    assert (summary.rows, summary.scored, summary.errors, summary.complete) == (350, 343, 7, True)
    assert summary.versions == {"1": 343}
    scored = output(tmp_path / "out")
    assert scored.column_names == ["row", "id", "score", "summer", "version"]
    good = [i for i in range(350) if i % 50 != 49]
    assert scored.column("row").to_pylist() == good
    assert scored.column("id").to_pylist() == [f"r{i}" for i in good]
    assert scored.column("score").to_pylist() == [2.0 * i + (i % 7) + 1 for i in good]
    assert scored.column("summer").to_pylist() == [i % 3 == 0 for i in good]
    assert set(scored.column("version").to_pylist()) == {1}
    bad = errors(tmp_path / "out")
    assert bad.column_names == ["row", "id", "error", "input"]
    assert bad.column("row").to_pylist() == [49, 99, 149, 199, 249, 299, 349]
    assert set(bad.column("error").to_pylist()) == {"day: must be <= 7, got 9"}
    assert json.loads(bad.column("input")[0].as_py())["day"] == 9


def test_rows_are_checked_in_chunks_and_scored_in_calls_of_the_batch_size(
    tmp_path: Path, store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fnserve.batch.scoring import LocalScorer
    from fnserve.runtime.function import ServedFunction

    checked, called = [], []
    check, call = LocalScorer.check, ServedFunction.call
    monkeypatch.setattr(LocalScorer, "check", lambda self, rows: checked.append(rows.n) or check(self, rows))
    monkeypatch.setattr(ServedFunction, "call", lambda self, c, n: called.append(n) or call(self, c, n))
    source = write(rows(350, bad_every=50), tmp_path / "in.parquet", "parquet", row_group_size=100)
    summary = run(store, source, tmp_path / "out")
    assert (summary.scored, summary.errors) == (343, 7)
    assert checked == [100, 100, 100, 50]  # a part's rows at once (up to READ_ROWS), not 32 by 32
    assert called == [32, 32, 32, 2] * 3 + [32, 17]  # each part's 98 good rows (49 of the last)
    assert output(tmp_path / "out").column("row").to_pylist() == [i for i in range(350) if i % 50 != 49]


def test_a_function_of_images_is_checked_one_batch_at_a_time() -> None:
    from fnserve.batch.scoring import chunk_rows
    from fnserve.batch.source import READ_ROWS
    from fnserve.runtime.schema import InputField, OutputSpec, Schema

    numbers = Schema((InputField("x", "float", True),), OutputSpec("float"))
    images = Schema((InputField("photo", "image", True),), OutputSpec("float"))
    assert chunk_rows(numbers, 1024) == READ_ROWS and chunk_rows(numbers, 3000) == 6000
    assert chunk_rows(numbers, READ_ROWS + 1) == READ_ROWS + 1
    assert chunk_rows(images, 64) == 64


def test_max_errors_stops_the_job_keeping_what_is_done_and_a_rerun_finishes_it(
    tmp_path: Path, store: CheckpointStore
) -> None:
    source = write(rows(500, bad_every=40), tmp_path / "in.parquet", "parquet", row_group_size=100)
    with pytest.raises(BatchError) as stopped:
        run(store, source, tmp_path / "out", max_errors=4)
    assert stopped.value.message.startswith(
        "stopped: 5 bad rows, more than --max-errors 4 (the first: row 39: day"
    )
    assert "run the same command again" in stopped.value.message
    done = [p.name for p in (tmp_path / "out" / "_fnbatch" / "done").glob("*.json")]
    assert done == ["part-00000-000000.json"]  # rows 0-99; the 5th bad row, 199, is in the next part
    assert (tmp_path / "out" / "_errors" / "part-00000-000001.parquet").exists()  # the stopped part's, so far
    summary = run(store, source, tmp_path / "out", max_errors=100)
    assert (summary.resumed_parts, summary.parts, summary.errors, summary.complete) == (1, 5, 12, True)
    run(store, source, tmp_path / "whole")
    assert output(tmp_path / "out").equals(output(tmp_path / "whole"))
    assert errors(tmp_path / "out").equals(errors(tmp_path / "whole"))


def test_a_stopped_job_resumes_to_the_result_of_an_uninterrupted_one(
    tmp_path: Path, store: CheckpointStore
) -> None:
    source = write(rows(700, bad_every=33), tmp_path / "in.csv", "csv")

    def stop_after_three_parts(progress: Progress) -> None:
        if progress.parts == 3:
            raise KeyboardInterrupt  # as a Ctrl-C half-way

    with pytest.raises(KeyboardInterrupt):
        run(store, source, tmp_path / "out", on_progress=stop_after_three_parts)
    seen: list[Progress] = []
    summary = run(store, source, tmp_path / "out", on_progress=seen.append)
    assert (summary.resumed_parts, summary.run_rows, summary.rows, summary.complete) == (3, 400, 700, True)
    assert seen[0].resumed_rows == 300 and seen[-1].rows == 700
    run(store, source, tmp_path / "whole")
    assert output(tmp_path / "out").equals(output(tmp_path / "whole"))
    assert errors(tmp_path / "out").equals(errors(tmp_path / "whole"))
    manifest = json.loads((tmp_path / "out" / "_fnbatch" / "manifest.json").read_text())
    assert [p["part"] for p in manifest["parts"]] == [f"part-00000-{i:06d}" for i in range(7)]
    assert (manifest["rows"], manifest["errors"], manifest["versions"]) == (700, 21, {"1": 679})


def test_a_complete_job_run_again_does_nothing(tmp_path: Path, store: CheckpointStore) -> None:
    source = write(rows(120), tmp_path / "in.parquet", "parquet")
    run(store, source, tmp_path / "out")
    again = run(store, source, tmp_path / "out")
    assert (again.complete, again.run_rows, again.rows, again.load_s) == (True, 0, 120, 0.0)


def test_an_output_holding_another_job_is_refused_naming_what_differs(
    tmp_path: Path, store: CheckpointStore
) -> None:
    source = write(rows(120), tmp_path / "in.parquet", "parquet")
    run(store, source, tmp_path / "out")
    publish_rated(store.root, tmp_path / "scratch", weight=3.0)  # latest is now version 2
    with pytest.raises(
        BatchError, match=r"differs in the checkpoint version \(1 then, 2 now: --version 1 resumes it\)"
    ):
        run(store, source, tmp_path / "out")
    assert run(store, source, tmp_path / "out", version="1").complete
    write(rows(121), source, "parquet")
    with pytest.raises(BatchError, match=r"holds another batch job \(it differs in the input"):
        run(store, source, tmp_path / "out", version="1")
    with pytest.raises(BatchError, match=r"the rows per part"):
        prepare(
            JobSpec("rated", str(source), str(tmp_path / "out"), keys=("id",), part_rows=7), rated(), store
        )
    replaced = run(store, source, tmp_path / "out", overwrite=True)
    assert replaced.versions == {"2": 121}
    assert set(output(tmp_path / "out").column("score").to_pylist()) >= {3.0 * 120 + 1 + 120 % 7}


def test_outputs_that_are_not_batch_outputs_or_hold_the_input_are_refused(
    tmp_path: Path, store: CheckpointStore
) -> None:
    source = write(rows(10), tmp_path / "data" / "in.parquet", "parquet")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(
        BatchError, match="busy exists and is not the output of fn batch; --overwrite replaces it"
    ):
        run(store, source, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").exists()
    with pytest.raises(BatchError, match="holds the input"):
        run(store, source, tmp_path / "data")


def test_indexes_share_the_parts_and_the_last_one_joins_them(tmp_path: Path, store: CheckpointStore) -> None:
    source = write(rows(450, bad_every=20), tmp_path / "in.parquet", "parquet", row_group_size=50)
    spec = JobSpec("rated", str(source), str(tmp_path / "out"), keys=("id",), part_rows=100)
    first = prepare(spec, rated(), store).run(shard=1, shards=2)
    assert (first.complete, first.run_rows) == (False, 200)  # parts 1 and 3
    second = prepare(spec, rated(), store).run(shard=0, shards=2)
    assert (second.complete, second.rows, second.parts) == (True, 450, 5)
    run(store, source, tmp_path / "whole")
    assert output(tmp_path / "out").drop(["id"]).equals(output(tmp_path / "whole").drop(["id"]))
    with pytest.raises(BatchError, match="index 2 is not one of the job's 2 indexes"):
        prepare(spec, rated(), store).run(shard=2, shards=2)


def test_any_fsspec_url_in_and_out(tmp_path: Path, store: CheckpointStore) -> None:
    local = write(rows(90, bad_every=30), tmp_path / "in.parquet", "parquet")
    memory = fsspec.filesystem("memory")
    memory.pipe("/batch-test/in.parquet", local.read_bytes())
    summary = run(store, "memory://batch-test/in.parquet", "memory://batch-test/out")
    assert (summary.scored, summary.errors) == (87, 3)
    assert memory.exists("/batch-test/out/_fnbatch/manifest.json")
    parts = sorted(p for p in memory.ls("/batch-test/out", detail=False) if p.endswith(".parquet"))
    with memory.open(parts[0], "rb") as handle:
        assert pa.parquet.read_table(handle).column("row").to_pylist()[:3] == [0, 1, 2]


def test_s3_in_and_out_with_the_stores_options(
    tmp_path: Path, s3_store_root: tuple[str, dict[str, Any]]
) -> None:
    root, options = s3_store_root
    store = publish_rated(root, tmp_path / "scratch", options=options)
    bucket = root.split("/")[2]
    s3 = fsspec.filesystem("s3", **options)
    s3.pipe(
        f"{bucket}/in/rows.jsonl", write(rows(150, bad_every=50), tmp_path / "in.jsonl", "jsonl").read_bytes()
    )
    summary = run(store, f"s3://{bucket}/in/", f"s3://{bucket}/out")
    assert (summary.rows, summary.scored, summary.errors, summary.complete) == (150, 147, 3, True)
    assert s3.exists(f"{bucket}/out/_fnbatch/manifest.json")
    again = run(store, f"s3://{bucket}/in/", f"s3://{bucket}/out")
    assert again.complete and again.run_rows == 0  # the same job: S3's ETags identify the input


def test_the_functions_code_is_what_its_image_would_hold(tmp_path: Path) -> None:
    import shutil

    from fnserve.batch.job import code_digest
    from tests.support.batching import FNS

    folder = tmp_path / "rated"
    shutil.copytree(FNS / "rated", folder)
    before = code_digest(folder)
    (folder / ".dockerignore").write_text("notebooks/\n")
    (folder / "notebooks").mkdir()
    (folder / "notebooks" / "explore.py").write_text("print('not in the image')\n")
    (folder / "__pycache__").mkdir(exist_ok=True)
    (folder / "__pycache__" / "predict.cpython-311.pyc").write_bytes(b"\0")
    assert code_digest(folder) == before  # what fn build leaves out does not make another job
    (folder / "helper.py").write_text("WEIGHT = 2\n")
    assert code_digest(folder) != before

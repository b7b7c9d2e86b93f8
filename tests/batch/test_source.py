"""Reading the input: files a URL names, parts planned and cut, every format read to the same rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fnserve.batch import BatchError
from fnserve.batch.source import PartDone, Piece, Source
from tests.support.batching import rows, write

COLUMNS = ["id", "price", "day", "season"]


def read_all(source: Source, *, batch_size: int = 32, part_rows: int = 100, wanted=lambda p: True):
    reading = source.read(wanted, COLUMNS, batch_size, part_rows)
    items = list(reading)
    return reading, items


def rows_read(items: list) -> list:
    """Each piece's raw rows as Python values, in order (JSON lines: the parsed objects)."""
    import json

    found = []
    for item in items:
        if isinstance(item, Piece):
            raw = item.raw
            found += [json.loads(line) for line in raw] if isinstance(raw, list) else raw.to_pylist()
    return found


def test_parquet_parts_are_runs_of_whole_row_groups_named_in_input_order(tmp_path: Path) -> None:
    write(rows(250), tmp_path / "a.parquet", "parquet", row_group_size=40)  # 7 groups: 40 x 6, 10
    write(rows(30), tmp_path / "b.parquet", "parquet", row_group_size=40)
    source = Source.open(str(tmp_path))
    parts = [p.info for p in source.parquet_parts(100)]
    assert [(p.name, p.first_row, p.rows) for p in parts] == [
        ("part-00000-000000", 0, 120),
        ("part-00000-000001", 120, 120),
        ("part-00000-000002", 240, 10),
        ("part-00001-000000", 250, 30),
    ]
    assert [p.index for p in parts] == [0, 1, 2, 3] and source.total_rows() == 280


def test_a_wanted_part_is_read_alone_in_batches_of_at_most_the_batch_size(tmp_path: Path) -> None:
    write(rows(250), tmp_path / "a.parquet", "parquet", row_group_size=40)
    reading, items = read_all(Source.open(str(tmp_path / "a.parquet")), wanted=lambda p: p.index == 1)
    pieces = [i for i in items if isinstance(i, Piece)]
    assert {p.part.name for p in pieces} == {"part-00000-000001"} and isinstance(items[-1], PartDone)
    assert all(p.raw.num_rows <= 32 for p in pieces)
    assert [r["id"] for r in rows_read(items)] == [f"r{i}" for i in range(120, 240)]
    assert reading.complete and len(reading.parts) == 3


@pytest.mark.parametrize("fmt", ["arrow", "arrows", "csv", "jsonl"])
def test_sequential_formats_are_cut_every_part_rows_and_read_as_parquet_is(tmp_path: Path, fmt: str) -> None:
    table = rows(230)
    write(table, tmp_path / f"in.{'arrow' if fmt == 'arrows' else fmt}", fmt, row_group_size=70)
    source = Source.open(str(tmp_path / f"in.{'arrow' if fmt == 'arrows' else fmt}"))
    reading, items = read_all(source)
    assert [(p.name, p.first_row, p.rows) for p in reading.parts] == [
        ("part-00000-000000", 0, 100),
        ("part-00000-000001", 100, 100),
        ("part-00000-000002", 200, 30),
    ]
    assert [type(i).__name__ for i in items].count("PartDone") == 3
    read = rows_read(items)
    assert [str(r["id"]) for r in read] == table.column("id").to_pylist()
    if fmt in ("csv", "jsonl"):
        assert source.total_rows() is None and reading.bytes_read == (tmp_path / f"in.{fmt}").stat().st_size
    else:
        assert source.total_rows() == (230 if fmt == "arrow" else None)


def test_a_folder_is_its_files_in_name_order_without_hidden_ones(tmp_path: Path) -> None:
    for name in ("b.parquet", "a.parquet", "_SUCCESS", ".hidden.parquet", "_tmp/x.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write(rows(3), tmp_path / name, "parquet") if name.endswith("parquet") else (
            tmp_path / name
        ).write_text("")
    assert [Path(f.path).name for f in Source.open(str(tmp_path)).files] == ["a.parquet", "b.parquet"]
    assert [Path(f.path).name for f in Source.open(f"{tmp_path}/b*").files] == ["b.parquet"]


def test_compressed_text_is_read_through_fsspec(tmp_path: Path) -> None:
    plain = write(rows(50), tmp_path / "in.csv", "csv")
    (tmp_path / "in.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    _, items = read_all(Source.open(str(tmp_path / "in.csv.gz")))
    assert len(rows_read(items)) == 50


def test_csv_lines_with_the_wrong_number_of_cells_are_kept_as_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,price,day,season\na,1,2,winter\nb,2,3\nc,3,4,summer\n")
    _, items = read_all(Source.open(str(tmp_path / "in.csv")))
    assert [r["id"] for r in rows_read(items)] == ["a", "c"]
    invalid = [line for item in items for line in item.invalid]
    assert invalid == [(3, "line 3: expected 4 cells, got 3: b,2,3")]


def test_json_lines_skip_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "a"}\n\n   \n{"id": "b"}\n')
    _, items = read_all(Source.open(str(tmp_path / "in.jsonl")))
    assert [r["id"] for r in rows_read(items)] == ["a", "b"]


def test_columns_and_their_types_are_known_before_reading(tmp_path: Path) -> None:
    write(rows(3), tmp_path / "in.parquet", "parquet")
    write(rows(3), tmp_path / "in.csv", "csv")
    write(rows(3), tmp_path / "in.jsonl", "jsonl")
    assert Source.open(str(tmp_path / "in.parquet")).columns()["price"] == pa.float64()
    assert Source.open(str(tmp_path / "in.csv")).columns() == dict.fromkeys(COLUMNS)
    assert list(Source.open(str(tmp_path / "in.jsonl")).columns()) == COLUMNS


@pytest.mark.parametrize(
    ("setup", "given", "message"),
    [
        (lambda p: None, "missing.parquet", "no input at"),
        (lambda p: p.mkdir(), "empty", "no input files at"),
        (lambda p: p.write_text("x"), "notes.txt", "cannot tell the format of 'notes.txt'"),
        (
            lambda p: (p.mkdir(), write(rows(1), p / "a.csv", "csv"), write(rows(1), p / "b.jsonl", "jsonl")),
            "mixed",
            "mixes formats (csv, jsonl)",
        ),
    ],
)
def test_inputs_that_cannot_be_read_are_named(tmp_path: Path, setup, given: str, message: str) -> None:
    setup(tmp_path / given)
    with pytest.raises(BatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Source.open(str(tmp_path / given))


def test_a_corrupt_file_is_a_batch_error_naming_the_input(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BatchError, match=r"cannot read .*bad.parquet"):
        Source.open(str(tmp_path / "bad.parquet")).columns()
    pq.write_table(rows(3), tmp_path / "ok.parquet")
    assert Source.open(str(tmp_path / "ok.parquet"), fmt="parquet").format == "parquet"

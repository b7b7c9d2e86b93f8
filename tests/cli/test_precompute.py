"""``fn precompute``: a new version holding the base's files and the table, its lineage in the
manifest; input tables and domains that cannot make a table are refused, naming why, and
nothing is published then."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from fnserve.cli.main import cli
from fnserve.runtime.store import CheckpointStore
from tests.support.tables import FNS, publish_weight, rows, write_rows

NOT_FINITE = """
from pathlib import Path
from fnserve import predict

def load(checkpoint_dir: str) -> float:
    return float((Path(checkpoint_dir) / "weight.txt").read_text())

@predict(loader=load)
def priced(model: float, member: bool, price: float) -> float:
    return price * model
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CheckpointStore:
    shutil.copytree(FNS / "tabled", tmp_path / "functions" / "tabled")
    (tmp_path / "functions" / "priced").mkdir()
    (tmp_path / "functions" / "priced" / "predict.py").write_text(NOT_FINITE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FNSERVE_STORE", f"file://{tmp_path}/store")
    monkeypatch.setenv("FNSERVE_CACHE", str(tmp_path / "cache"))
    store = CheckpointStore(f"file://{tmp_path}/store", cache_dir=tmp_path / "publish-cache")
    publish_weight(store, "2")
    return store


def fn(*args: str) -> Result:
    return CliRunner().invoke(cli, ["precompute", *args], catch_exceptions=False)


def test_the_domain_becomes_a_version_holding_the_base_files_and_the_table(project: CheckpointStore) -> None:
    result = fn("tabled", "--domain")
    assert result.exit_code == 0, result.output
    assert "tabled" in result.output and "84" in result.output  # 3 countries x 7 days x 2 x 2 sizes
    assert project.versions("tabled") == [1, 2]
    manifest = project.manifest("tabled", 2)
    assert sorted(manifest.files) == ["fnserve-table.parquet", "weight.txt"]
    lineage = manifest.metadata["lineage"]
    assert lineage == {
        "base_version": 1,
        "technique": "precompute",
        "settings": {"rows": 84, "source": "domain"},
    }
    table = pq.read_table(project.fetch("tabled", 2).path / "fnserve-table.parquet")
    assert table.num_rows == 84
    assert table.column_names == ["country", "day", "member", "size", "out.score", "out.bucket"]


def test_rows_from_csv_or_parquet_repeats_counted_once(project: CheckpointStore, tmp_path: Path) -> None:
    columns = rows(range(1, 3))
    doubled = {k: v + v for k, v in columns.items()}
    for path in (tmp_path / "rows.csv", tmp_path / "rows.parquet"):
        result = fn("tabled", "--inputs", write_rows(path, doubled), "--from", "1")
        assert result.exit_code == 0, result.output
    assert project.versions("tabled") == [1, 2, 3]
    for version in (2, 3):
        assert project.manifest("tabled", version).metadata["lineage"]["settings"]["rows"] == 24


def test_a_table_whose_columns_are_not_the_inputs_is_refused_naming_them(
    project: CheckpointStore, tmp_path: Path
) -> None:
    columns = rows(range(1, 3))
    columns["colour"] = columns.pop("size")
    result = fn("tabled", "--inputs", write_rows(tmp_path / "rows.parquet", columns))
    assert result.exit_code == 1
    assert "missing ['size'], unexpected ['colour']" in result.output
    assert project.versions("tabled") == [1]


def test_values_that_break_the_inputs_rules_are_refused_naming_row_and_input(
    project: CheckpointStore, tmp_path: Path
) -> None:
    columns = rows(range(1, 3))
    columns["day"][5] = 9
    columns["country"][7] = "XX"
    result = fn("tabled", "--inputs", write_rows(tmp_path / "rows.parquet", columns))
    assert result.exit_code == 1
    assert "day[5]" in result.output and "country[7]" in result.output
    assert project.versions("tabled") == [1]


def test_a_domain_that_is_not_finite_or_too_large_is_refused(project: CheckpointStore) -> None:
    publish_weight(CheckpointStore(project.root, cache_dir=project.cache_dir), "2")  # tabled v2
    result = fn("priced", "--domain")
    assert result.exit_code == 1 and "not finite: price (float)" in result.output
    result = fn("tabled", "--domain", "--limit", "80")
    assert result.exit_code == 1
    assert "the domain has 84 combinations, above the limit of 80 (--limit)" in result.output
    assert project.versions("tabled") == [1, 2]


def test_inputs_or_domain_one_of_them(project: CheckpointStore) -> None:
    assert fn("tabled").exit_code == 2
    assert fn("tabled", "--domain", "--inputs", "x.parquet").exit_code == 2
    missing = fn("tabled", "--inputs", "file:///nonexistent/rows.parquet")
    assert missing.exit_code == 1 and "no input table at file:///nonexistent/rows.parquet" in missing.output

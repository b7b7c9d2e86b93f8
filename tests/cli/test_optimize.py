"""`fn optimize` and `fn functions` in a project folder with a real file:// store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fnserve.cli.main import cli
from tests.support import optimizing


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(optimizing.FOLDER, tmp_path / "functions" / "optimizable")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FNSERVE_STORE", f"file://{tmp_path}/store")
    monkeypatch.setenv("FNSERVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "220")
    optimizing.publish(f"file://{tmp_path}/store", tmp_path / "cache", tmp_path)
    return tmp_path


def test_optimize_prints_the_table_and_the_version_and_fn_functions_shows_the_lineage(project: Path) -> None:
    result = CliRunner().invoke(
        cli, ["optimize", "optimizable", "--quantize", "float16"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "base (v1)" in result.output and "variant (litert)" in result.output
    assert "savedmodel" in rows["format"] and "litert" in rows["format"]
    assert "points" in rows["roc_auc (gate)"] and "points" in rows["log_loss"]
    assert "(gate: roc_auc drops ≤ 1 points)" in " ".join(result.output.split())
    assert "MB" in rows["size"] and "x" in rows["batch-1 p50 ms"] and "preds/s @ 32" in rows
    assert "published optimizable version 2 (quantize-float16 of version 1)" in result.output

    listed = CliRunner().invoke(cli, ["functions"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert "v1: auc 0.8" in listed.output
    line = next(line for line in listed.output.splitlines() if "v2" in line)
    assert "v2 ← quantize-float16 of v1: " in line and "roc_auc 0." in line and "preds/s" in line


def test_a_refused_variant_shows_its_table_and_why(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fnserve.optimize.convert as convert

    monkeypatch.setattr(convert, "make_variant", optimizing.damaging_converter)
    result = CliRunner().invoke(cli, ["optimize", "optimizable", "--quantize", "int8"])
    assert result.exit_code == 1
    assert "variant" in result.output and "not published: roc_auc drops" in result.output
    assert "Traceback" not in result.output


def test_one_technique_must_be_chosen(project: Path) -> None:
    result = CliRunner().invoke(cli, ["optimize", "optimizable"])
    assert result.exit_code == 2 and "choose one technique" in result.output
    both = CliRunner().invoke(cli, ["optimize", "optimizable", "--freeze", "--quantize", "int8"])
    assert both.exit_code == 2 and "choose one technique" in both.output

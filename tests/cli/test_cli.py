"""The `fn` command: user mistakes are one-line errors, never tracebacks."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from fnserve.cli.main import cli
from fnserve.runtime.store import CheckpointStore
from tests.support.serving import start_serve, stop

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`fn ARGS` in-process, from ``cwd`` (settings are read from the working folder)."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


def test_serve_reports_bad_function_file_without_traceback(tmp_path: Path) -> None:
    code, output = run(["serve", str(FNS / "bad_type")], tmp_path)
    assert code == 1
    assert "bad_type" in output and "unsupported type" in output and "Traceback" not in output


def test_serve_reports_duplicate_names(tmp_path: Path) -> None:
    code, output = run(["serve", str(FNS / "dup_a"), str(FNS / "dup_b")], tmp_path)
    assert code == 1 and "defined twice" in output


def test_serve_reports_missing_target(tmp_path: Path) -> None:
    code, output = run(["serve", "no/such/folder"], tmp_path)
    assert code == 1 and "no such file or folder" in output


def test_bad_fn_toml_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "fn.toml").write_text("[serve]\nport = 'eighty'\n")
    code, output = run(["functions", str(FNS / "double")], tmp_path)
    assert code == 1 and "port" in output and "Traceback" not in output


def test_functions_lists_inputs_and_versions(tmp_path: Path) -> None:
    store = tmp_path / "store"
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "weight.txt").write_text("2")
    CheckpointStore(store.as_uri(), cache_dir=tmp_path / "cache").publish("weighted", weights)
    code, output = run(
        ["functions", str(FNS / "weighted"), str(FNS / "double")],
        tmp_path,
        env={"FNSERVE_STORE": store.as_uri(), "COLUMNS": "200"},
    )
    assert code == 0
    assert "weighted" in output and "x: float" in output and "1" in output
    assert "(none needed)" in output  # double has no checkpoint


def test_train_unknown_function(tmp_path: Path) -> None:
    code, output = run(["train", "nope"], tmp_path)
    assert code == 1 and "no training script for 'nope'" in output


def test_train_publishes_and_missing_skips(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "functions" / "weighted").mkdir(parents=True)
    shutil.copy(FNS / "weighted" / "predict.py", project / "functions" / "weighted")
    (project / "functions" / "weighted" / "train.py").write_text(
        "import pathlib, tempfile\n"
        "from fnserve import TrainContext\n"
        "ctx = TrainContext.from_env()\n"
        "out = pathlib.Path(tempfile.mkdtemp())\n"
        "(out / 'weight.txt').write_text('5')\n"
        "ctx.publish(out, metrics={'loss': 0.1})\n"
    )
    env = {**os.environ, "COLUMNS": "200"}
    fn = [sys.executable, "-m", "fnserve.cli"]
    first = subprocess.run([*fn, "train", "--missing"], cwd=project, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "published weighted version 1" in first.stdout + first.stderr
    again = subprocess.run([*fn, "train", "--missing"], cwd=project, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "exists, not training" in again.stderr
    assert CheckpointStore((project / ".fnserve" / "store").as_uri()).versions("weighted") == [1]

    (project / "functions" / "weighted" / "train.py").write_text("raise SystemExit(3)\n")
    failed = subprocess.run([*fn, "train", "weighted"], cwd=project, env=env, capture_output=True, text=True)
    assert failed.returncode == 1 and "nothing was published" in failed.stderr


@pytest.fixture
def kinds_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    served = start_serve(tmp_path, FNS / "double", FNS / "kinds")
    yield served
    stop(served)


def test_invoke_query_json_and_file(kinds_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = kinds_server.url
    code, output = run(["invoke", "double", "-d", "x=4", "--url", url], tmp_path)
    assert code == 0 and output.strip() == "8.0"
    code, output = run(
        ["invoke", "double", "--json", '{"instances": [{"x": 1}, {"x": 2}]}', "--url", url], tmp_path
    )
    assert code == 0 and "2.0" in output and "4.0" in output
    photo = tmp_path / "p.png"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "PNG")
    photo.write_bytes(buf.getvalue())
    args = [
        "invoke",
        "kinds",
        "--file",
        str(photo),
        "--url",
        url,
        "-d",
        "count=1",
        "-d",
        "ratio=0.5",
        "-d",
        "flag=true",
        "-d",
        "season=winter",
        "-d",
        "vector=1,2,3",
    ]
    code, output = run(args, tmp_path)
    assert code == 0 and '"photo_mean": 20.0' in output


def test_invoke_errors_are_one_line(kinds_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, output = run(["invoke", "double", "-d", "x=abc", "--url", kinds_server.url], tmp_path)
    assert code == 1 and "422" in output and "x: expected a number" in output
    code, output = run(["invoke", "double", "-d", "x", "--url", kinds_server.url], tmp_path)
    assert code == 2 and "KEY=VALUE" in output
    code, output = run(["invoke", "double", "-d", "x=1", "--url", "http://127.0.0.1:9"], tmp_path)
    assert code == 1 and "cannot reach" in output and "Traceback" not in output

"""Discovering function files: what is found, and load-time errors that name the culprit."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from fnserve.runtime.errors import FunctionError
from fnserve.runtime.loader import discover, function_files, load_file

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"
GOOD = ["double", "kinds", "scalar", "weighted"]


def write(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "predict.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_discover_finds_every_function_in_a_folder_of_function_folders(tmp_path: Path) -> None:
    for name in GOOD:
        (tmp_path / name).mkdir()
        (tmp_path / name / "predict.py").write_text((FNS / name / "predict.py").read_text())
    (tmp_path / "not-a-function").mkdir()  # folders without predict.py are ignored
    found = discover([tmp_path])
    assert sorted(f.spec.name for f in found) == GOOD
    assert {f.path for f in found} == {(tmp_path / n / "predict.py").resolve() for n in GOOD}


def test_a_hidden_folder_is_never_a_function(tmp_path: Path) -> None:
    """`fn new` stages a function in functions/.NAME.<random>.new/ before it renames it."""
    (tmp_path / "double").mkdir()
    (tmp_path / "double" / "predict.py").write_text((FNS / "double" / "predict.py").read_text())
    (tmp_path / ".double.x1.new").mkdir()
    (tmp_path / ".double.x1.new" / "predict.py").write_text((FNS / "double" / "predict.py").read_text())
    assert [f.spec.name for f in discover([tmp_path])] == ["double"]  # not "defined twice"


def test_discover_accepts_function_folders_and_files() -> None:
    found = discover([FNS / "double", FNS / "scalar" / "predict.py"])
    assert [f.spec.name for f in found] == ["double", "scalar"]
    assert [i.name for i in found[1].schema.inputs] == ["word", "times"]


def test_found_functions_are_the_users_plain_functions() -> None:
    (double,) = discover([FNS / "double"])
    assert double.func(3.0) == 6.0


def test_functions_with_a_loader_skip_the_model_in_their_schema() -> None:
    (weighted,) = discover([FNS / "weighted"])
    assert weighted.spec.checkpoint == "weighted" and [i.name for i in weighted.schema.inputs] == ["x"]


def test_missing_target_is_named(tmp_path: Path) -> None:
    with pytest.raises(FunctionError, match=re.escape(f"{tmp_path / 'nope'}: no such file")):
        discover([tmp_path / "nope"])


def test_folder_without_function_files_is_named(tmp_path: Path) -> None:
    with pytest.raises(FunctionError, match=re.escape(f"{tmp_path}: no */predict.py")):
        function_files([tmp_path])


@pytest.mark.parametrize(
    ("folder", "problem"), [("bad_hint", "needs a type hint"), ("bad_type", "has unsupported type")]
)
def test_bad_signatures_name_the_file_function_and_parameter(folder: str, problem: str) -> None:
    path = (FNS / folder / "predict.py").resolve()
    with pytest.raises(FunctionError, match=re.escape(f"{path}: function '{folder}': input 'x' ") + problem):
        discover([FNS / folder])


def test_duplicate_names_are_an_error_naming_both_files() -> None:
    with pytest.raises(FunctionError) as info:
        discover([FNS / "dup_a", FNS / "dup_b"])
    message = info.value.message
    assert "'same' is defined twice" in message
    assert str((FNS / "dup_a" / "predict.py").resolve()) in message
    assert str((FNS / "dup_b" / "predict.py").resolve()) in message


def test_a_file_that_raises_at_import_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "crash",
        """\
        from fnserve import predict

        SETTINGS = {"a": 1}
        THRESHOLD = SETTINGS["missing"]
        """,
    )
    with pytest.raises(FunctionError, match=re.escape(f"{path.resolve()}:4: importing") + ".*KeyError"):
        discover([tmp_path / "crash"])


def test_a_syntax_error_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "typo", "def broken(:\n")
    with pytest.raises(FunctionError, match=re.escape(str(path.resolve())) + ".*SyntaxError"):
        discover([path])


def test_a_file_without_marked_functions_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "plain", "def f(x: float) -> float:\n    return x\n")
    with pytest.raises(FunctionError, match="no function marked with @predict"):
        load_file(path.resolve())


def test_marked_functions_imported_from_another_file_belong_to_that_file(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "shared_helper_for_loader_test.py").write_text(
        "from fnserve import predict\n\n\n@predict\ndef helper_fn(x: float) -> float:\n    return x\n"
    )
    write(
        tmp_path / "user",
        """\
        from shared_helper_for_loader_test import helper_fn

        from fnserve import predict

        @predict
        def own(x: float) -> float:
            return helper_fn(x)
        """,
    )
    assert [f.spec.name for f in discover([tmp_path / "user"])] == ["own"]


def test_helper_modules_beside_the_function_file_import(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "features_for_loader_test.py").write_text("SCALE = 3\n")
    write(
        tmp_path / "fn",
        """\
        from features_for_loader_test import SCALE

        from fnserve import predict

        @predict
        def scaled(x: float) -> float:
            return x * SCALE
        """,
    )
    (found,) = discover([tmp_path / "fn"])
    assert found.func(2.0) == 6.0

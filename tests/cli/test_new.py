"""`fn new`: the generated function trains, serves and passes its own test as generated; refusals.

The end-to-end tests run the real CLI as the user's path does: `fn new` in a fresh project, then
`fn train NAME` and `fn serve` as processes (the server on an ephemeral loopback port), a GET
prediction, and `pytest functions/NAME` on the generated test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from fnserve.cli.main import cli
from fnserve.images.source import find_function
from fnserve.images.templates import load_template
from fnserve.k8s.spec import Resources
from fnserve.project import NAME_RULE
from fnserve.runtime.errors import FnError
from fnserve.runtime.loader import discover
from fnserve.scaffold import TEMPLATES, ScaffoldError, create_function
from tests.support.serving import start_serve, stop

ROOT = Path(__file__).resolve().parents[2]


def fn_new(project: Path, *args: str) -> tuple[int, str]:
    """`fn new ARGS` in-process, from ``project`` (the project is the working folder)."""
    old = Path.cwd()
    os.chdir(project)
    try:
        result = CliRunner().invoke(cli, ["new", *args], catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


def environment(project: Path) -> dict[str, str]:
    """This fnserve first on the path, the store that `start_serve` serves from."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "FNSERVE_STORE": f"file://{project}/store", "COLUMNS": "200"}


def train_serve_and_test(project: Path, name: str, template: str) -> float:
    """The user's path on a generated function; returns its prediction for x=2, category=b."""
    code, output = fn_new(project, name, "--template", template)
    assert code == 0, output
    env = environment(project)
    fn = [sys.executable, "-m", "fnserve.cli"]
    trained = subprocess.run(
        [*fn, "train", name], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert f"published {name} version 1" in trained.stdout

    served = start_serve(project, extra_env={"PYTHONPATH": env["PYTHONPATH"]})  # ./functions
    try:
        answer = httpx.get(f"{served.url}/function/{name}", params={"x": 2, "category": "b"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Model-Version"] == "1"
        refused = httpx.get(f"{served.url}/function/{name}", params={"x": 11, "category": "d"}, timeout=30)
        assert refused.status_code == 422
        assert (
            refused.json()["error"]
            == "x: must be <= 10, got 11.0; category: expected one of a, b, c, got 'd'"
        )
    finally:
        stop(served)

    tested = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:kmock",
            f"functions/{name}",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tested.returncode == 0 and "1 passed" in tested.stdout, tested.stdout + tested.stderr
    return float(answer.json()["predictions"][0])


def test_python_function_trains_serves_and_passes_its_test(tmp_path: Path) -> None:
    # A hyphenated name: served as fare-estimate, a Python function named fare_estimate.
    prediction = train_serve_and_test(tmp_path, "fare-estimate", "python")
    assert prediction == pytest.approx(5.0, abs=0.2)  # train.py's line for b: 2 * x + 1


@pytest.mark.slow
def test_tensorflow_function_trains_serves_and_passes_its_test(tmp_path: Path) -> None:
    prediction = train_serve_and_test(tmp_path, "fare", "tensorflow")
    assert prediction == pytest.approx(5.0, abs=0.5)


@pytest.mark.parametrize("template", TEMPLATES)
def test_generated_code_passes_the_projects_lint_and_format(tmp_path: Path, template: str) -> None:
    assert fn_new(tmp_path, "my-fare", "--template", template)[0] == 0
    config = str(ROOT / "pyproject.toml")
    for check in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *check, "--no-cache", "--config", config, "functions"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize(
    ("name", "python_name"),
    [("class", "class_"), ("load", "load_"), ("predict", "predict_"), ("my-model", "my_model")],
)
def test_names_that_are_not_python_names_still_load(
    tmp_path: Path, template: str, name: str, python_name: str
) -> None:
    # A keyword, a name the file itself uses, a hyphen: the served name is the one asked for.
    assert fn_new(tmp_path, name, "--template", template)[0] == 0
    (found,) = discover([tmp_path / "functions" / name])
    assert found.spec.name == name and found.spec.checkpoint == name
    assert found.func.__name__ == python_name
    assert [field.name for field in found.schema.inputs] == ["x", "category"]
    assert (tmp_path / "functions" / name / f"test_{python_name}.py").is_file()


@pytest.mark.parametrize("template", TEMPLATES)
def test_function_toml_is_what_fn_build_reads(tmp_path: Path, template: str) -> None:
    assert fn_new(tmp_path, "fare", "--template", template)[0] == 0
    source = find_function(tmp_path, "fare")
    assert source.template == template and source.trainable
    assert [str(ref) for ref in source.checkpoints] == ["fare@latest"]
    assert source.requirements is not None
    assert load_template(template).name == template  # a template fn build has

    # Its commented-out Kubernetes settings, uncommented, are the defaults they claim to be.
    text = (tmp_path / "functions" / "fare" / "function.toml").read_text()
    uncommented = tomllib.loads(re.sub(r"^# (\[|\w+ = )", r"\1", text, flags=re.M))
    assert Resources.from_mapping(uncommented["resources"]) == Resources()
    assert uncommented["train"] == {"schedule": "0 3 * * *"}


def test_without_template_says_which_it_chose(tmp_path: Path) -> None:
    code, output = fn_new(tmp_path, "fare")
    expected = "tensorflow" if importlib.util.find_spec("tensorflow") else "python"
    assert code == 0 and f"template {expected} (" in output
    assert f'template = "{expected}"' in (tmp_path / "functions" / "fare" / "function.toml").read_text()


@pytest.mark.parametrize(
    "name", ["Fare", "1fare", "-fare", "fare estimate", "../fare", "fare/x", "a" * 64, ""]
)
def test_invalid_names_are_refused_naming_the_rule(tmp_path: Path, name: str) -> None:
    code, output = fn_new(tmp_path, "--template", "python", "--", name)  # --: "-fare" is no option
    assert code == 1 and NAME_RULE in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even functions/


def test_an_existing_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "functions" / "fare"
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text("# mine\n")
    code, output = fn_new(tmp_path, "fare", "--template", "python")
    assert code == 1 and "functions/fare already exists" in output and "Traceback" not in output
    assert [p.name for p in folder.iterdir()] == ["predict.py"]
    assert (folder / "predict.py").read_text() == "# mine\n"

    (tmp_path / "functions" / "notes").write_text("a file, not a folder\n")
    code, output = fn_new(tmp_path, "notes", "--template", "python")
    assert code == 1 and "functions/notes already exists" in output


def test_unknown_template_is_a_usage_error(tmp_path: Path) -> None:
    code, output = fn_new(tmp_path, "fare", "--template", "pytorch")
    assert code == 2 and "'tensorflow', 'python'" in output
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Interrupted after the first file: no half function, no staging folder, no empty functions/.
    write_text, written = Path.write_text, []

    def interrupted(path: Path, text: str, *args: object, **kwargs: object) -> int:
        if written:
            raise KeyboardInterrupt
        written.append(path)
        return write_text(path, text)

    monkeypatch.setattr(Path, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create_function(tmp_path, "fare", "python")
    assert written and list(tmp_path.iterdir()) == []


def test_a_disk_error_is_a_user_error_naming_the_folder(tmp_path: Path) -> None:
    (tmp_path / "functions").write_text("a file where the functions folder belongs\n")
    with pytest.raises(ScaffoldError, match=r"^cannot write functions/fare: ") as raised:
        create_function(tmp_path, "fare", "python")
    assert isinstance(raised.value, FnError)  # what the CLI turns into one line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["functions"]


def test_a_folder_made_while_writing_is_refused_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, write_text = tmp_path / "functions" / "fare", Path.write_text

    def racing(path: Path, text: str, *args: object, **kwargs: object) -> int:
        folder.mkdir(exist_ok=True)  # someone else's, empty: a rename would silently replace it
        return write_text(path, text)

    monkeypatch.setattr(Path, "write_text", racing)
    with pytest.raises(ScaffoldError, match="functions/fare already exists"):
        create_function(tmp_path, "fare", "python")
    assert [p.name for p in (tmp_path / "functions").iterdir()] == ["fare"]  # no staging folder left
    assert list(folder.iterdir()) == []


def test_the_readme_lists_the_files_fn_new_writes(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    (listed,) = re.findall(r"fn new price +# functions/price/: ([^\n]+)", readme)
    assert fn_new(tmp_path, "price", "--template", "python")[0] == 0
    written = sorted(p.name for p in (tmp_path / "functions" / "price").iterdir())
    assert sorted(listed.replace(" and ", ", ").split(", ")) == written

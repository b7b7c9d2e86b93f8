"""`fn build` plans as data: templates, the function's folder, the context, the tag and labels.

Pure and fast: nothing here talks to the Docker engine (tests/docker/test_engine.py builds for real).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

import fnserve
from fnserve.images import BuildError
from fnserve.images.context import DEFAULT_IGNORE, check_member, is_ignored, parse_ignore, write_tar
from fnserve.images.inputs import BakedCheckpoint, BuildInputs, ca_bundle, pip_config, runtime_requirements
from fnserve.images.plan import BAKED_STORE, plan_build
from fnserve.images.source import checkpoint_refs, find_function
from fnserve.images.templates import available_templates, load_template, render

REPO = Path(__file__).resolve().parents[2]
PREDICT = """\
from fnserve import predict


def load(path):
    return float(open(path + "/weight.txt").read())


@predict(loader=load)
def weighted(model, x: float) -> float:
    return model * x
"""


def make_function(
    project: Path, name: str = "weighted", source: str = PREDICT, files: dict[str, str] | None = None
) -> Path:
    folder = project / "functions" / name
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(source)
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def inputs(**changes: object) -> BuildInputs:
    base = BuildInputs(
        runtime_requirements=("numpy==2.0.0", "fsspec==2024.6.0"),
        pip_config="[global]\n",
        ca_bundle=b"-----BEGIN CERTIFICATE-----\n",
        fnserve_package=Path(fnserve.__file__).parent,
        base_image_id="sha256:" + "b" * 64,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def plan_for(project: Path, name: str = "weighted", template: str | None = None, **changes: object):  # type: ignore[no-untyped-def]
    source = find_function(project, name, template)
    return plan_build(
        source, load_template(source.template), inputs(**changes), base_image="fnserve/base:bookworm"
    )


# --- templates ------------------------------------------------------------------------------------


def test_shipped_templates_and_unknown_name() -> None:
    assert {"python", "tensorflow"} <= set(available_templates())
    assert load_template("tensorflow").requirements == ("tensorflow-cpu==2.21.0",)
    with pytest.raises(BuildError, match=r"unknown template 'pytorch': known templates are .*python"):
        load_template("pytorch")


def test_render_is_substitution_only() -> None:
    assert render(
        "FROM {{base_image}} AS {{ stage }}", {"base_image": "b:1", "stage": "deps"}, where="t"
    ) == ("FROM b:1 AS deps")
    with pytest.raises(BuildError, match=r"t: no value for placeholder.*stage"):
        render("FROM {{ stage }}", {}, where="t")
    with pytest.raises(BuildError, match="not a plain word"):
        render("ENV A={{ a }}", {"a": "x\nRUN rm -rf /"}, where="t")


@pytest.mark.parametrize("template", ["python", "tensorflow"])
def test_dockerfile_layers_nonroot_healthcheck_entrypoint(tmp_path: Path, template: str) -> None:
    make_function(tmp_path)
    dockerfile = plan_for(tmp_path, template=template).dockerfile
    assert "{{" not in dockerfile and "FROM fnserve/base:bookworm AS deps" in dockerfile
    deps, image = dockerfile.split("\nFROM fnserve/base:bookworm\n")
    # Build-time pip config and CA bundle exist only in the dependency stage.
    assert "build/pip.conf" in deps and "build/" not in image and "PIP_CERT" not in image
    # Requirements before code: a code change leaves every dependency layer cached.
    order = [
        image.index(s)
        for s in ("COPY --from=deps", "COPY fnserve/", "COPY function/ /srv/functions/weighted/")
    ]
    assert order == sorted(order)
    assert (
        deps.index("runtime-requirements") < deps.index("template-requirements") < deps.index("function-req")
    )
    assert "USER 10001:10001" in image and "/readyz" in image.split("HEALTHCHECK", 1)[1]
    assert 'ENTRYPOINT ["python", "-m", "fnserve.runtime", "/srv/functions/weighted"]' in image
    assert "HOME=/tmp" in image and "FNSERVE_CACHE=/tmp/" in image  # read-only root: writes go to /tmp


# --- the function's folder -------------------------------------------------------------------------


def test_missing_function_names_the_known_ones(tmp_path: Path) -> None:
    make_function(tmp_path, "recs")
    with pytest.raises(
        BuildError, match=r"no function 'tagger': expected .*functions/tagger/predict.py.*recs"
    ):
        find_function(tmp_path, "tagger")
    with pytest.raises(BuildError, match="not a valid name"):
        find_function(tmp_path, "../etc")


def test_template_from_function_toml_and_errors(tmp_path: Path) -> None:
    make_function(tmp_path, "a", files={"function.toml": '[build]\ntemplate = "python"\n'})
    make_function(tmp_path, "b")
    make_function(tmp_path, "c", files={"function.toml": "[build]\ntemplate = 3\n"})
    make_function(tmp_path, "d", source="def broken(:\n")
    assert find_function(tmp_path, "a").template == "python"
    assert find_function(tmp_path, "b").template == "tensorflow"
    assert find_function(tmp_path, "b", "python").template == "python"
    with pytest.raises(BuildError, match=r"function.toml: \[build\] template must be"):
        find_function(tmp_path, "c")
    with pytest.raises(BuildError, match=r"predict.py:1: not valid Python"):
        find_function(tmp_path, "d")


def test_checkpoint_refs_read_without_importing() -> None:
    source = """
import fnserve
from fnserve import predict
VERSION = 2

@predict
def plain(x: int) -> int: ...

@predict(loader=len)
def recs(m, x: int) -> int: ...

@fnserve.predict(loader=len, checkpoint="shared", version=3, name="other")
def pinned(m, x: int) -> int: ...

@predict(loader=len, version=VERSION)
def computed(m, x: int) -> int: ...
"""
    assert [str(r) for r in checkpoint_refs(source)] == ["recs@latest", "shared@3", "computed@?"]
    assert checkpoint_refs(source)[1].function == "other"


# --- the context -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "function/.env",
        "function/.aws/credentials",
        "function/sub/id_rsa",
        "function/key.pem",
        "function/.git/config",
        "function/__pycache__/predict.cpython-311.pyc",
        "function/.fnserve/store/x",
        "function/credentials.json",
    ],
)
def test_default_ignore_keeps_secrets_and_caches_out(path: str) -> None:
    assert is_ignored(path, parse_ignore(DEFAULT_IGNORE))


def test_context_holds_the_function_minus_ignored_files(tmp_path: Path) -> None:
    make_function(
        tmp_path,
        files={
            "helper.py": "X = 1\n",
            "data/vocab.txt": "a\n",
            ".env": "TOKEN=secret\n",
            ".aws/credentials": "[default]\n",
            "notes/draft.md": "x",
            "notes/keep.md": "x",
            ".dockerignore": "notes\n!notes/keep.md\n",
        },
    )
    paths = {f.path for f in plan_for(tmp_path).files}
    assert {
        "function/predict.py",
        "function/helper.py",
        "function/data/vocab.txt",
        "function/notes/keep.md",
    } <= paths
    assert not {"function/.env", "function/.aws/credentials", "function/notes/draft.md"} & paths
    assert {
        "Dockerfile",
        ".dockerignore",
        "build/pip.conf",
        "fnserve/__init__.py",
        "fnserve/runtime/app.py",
    } <= paths
    assert not any("__pycache__" in p for p in paths)


def test_symlink_out_of_the_function_folder_is_refused(tmp_path: Path) -> None:
    folder = make_function(tmp_path)
    (tmp_path / "secret.txt").write_text("s3cret")
    (folder / "inside.txt").write_text("fine")
    (folder / "alias.txt").symlink_to(folder / "inside.txt")
    assert "function/alias.txt" in {f.path for f in plan_for(tmp_path).files}
    (folder / "leak.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(BuildError, match=r"leak.txt links to .*secret.txt, outside"):
        plan_for(tmp_path)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside", "function/../../x", "a//b", "./a", ""])
def test_context_paths_stay_inside(path: str) -> None:
    with pytest.raises(BuildError, match="not a path inside the build context"):
        check_member(path)


def test_context_tar_is_reproducible_and_anonymous(tmp_path: Path) -> None:
    make_function(tmp_path)
    plan = plan_for(tmp_path)
    with write_tar(plan.files) as one, write_tar(plan.files) as two:
        first, second = one.read(), two.read()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
        assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}
        assert {m.uname for m in members} == {""}
        assert tar.extractfile("function/predict.py").read() == PREDICT.encode()  # type: ignore[union-attr]


# --- tag and labels --------------------------------------------------------------------------------


def test_tag_is_a_content_hash(tmp_path: Path) -> None:
    folder = make_function(tmp_path)
    plan = plan_for(tmp_path)
    assert plan.image == f"fnserve/weighted:{plan.tag}" and plan.latest == "fnserve/weighted:latest"
    assert len(plan.tag) == 12 and plan_for(tmp_path).tag == plan.tag  # same sources, same tag
    assert plan_for(tmp_path, base_image_id="sha256:" + "c" * 64).tag != plan.tag  # new base, new tag
    (folder / "predict.py").write_text(PREDICT + "# a comment\n")
    assert plan_for(tmp_path).tag != plan.tag
    assert plan.remote("reg.example:5000/team") == (
        f"reg.example:5000/team/fnserve/weighted:{plan.tag}",
        "reg.example:5000/team/fnserve/weighted:latest",
    )


def test_labels_name_function_version_and_checkpoint_without_host_paths(tmp_path: Path) -> None:
    make_function(tmp_path, files={"requirements.txt": "pandas\n"})
    plan = plan_for(tmp_path)
    assert plan.labels["io.fnserve.function"] == "weighted"
    assert plan.labels["io.fnserve.fnserve-version"] == fnserve.__version__
    assert plan.labels["io.fnserve.checkpoint"] == "weighted@latest"
    assert plan.labels["org.opencontainers.image.version"] == plan.tag
    assert plan.labels["io.fnserve.template"] == "tensorflow"
    assert "io.fnserve.checkpoint-baked" not in plan.labels
    host = str(tmp_path)
    assert not any(host in value for value in plan.labels.values()) and host not in plan.dockerfile
    function_requirements = {f.path: f.content() for f in plan.files}["build/function-requirements.txt"]
    assert function_requirements == b"pandas\n"


def test_baked_checkpoint_is_a_store_inside_the_image(tmp_path: Path) -> None:
    make_function(tmp_path)
    weights = tmp_path / "weight.txt"
    weights.write_text("2.5")
    baked = BakedCheckpoint("weighted", 4, "d" * 64, {"weight.txt": weights}, b'{"format": 1}')
    plan = plan_for(tmp_path, baked=baked)
    files = {f.path: f.content() for f in plan.files}
    assert files["checkpoint/weighted/4/weight.txt"] == b"2.5"
    assert files["checkpoint/weighted/4/fnserve-manifest.json"] == b'{"format": 1}'
    assert f"ENV FNSERVE_STORE={BAKED_STORE}" in plan.dockerfile
    assert plan.labels["io.fnserve.checkpoint"] == "weighted@4" and plan.baked
    assert plan.labels["io.fnserve.checkpoint-baked"] == "sha256:" + "d" * 64
    assert "ENV FNSERVE_STORE=\n" in plan_for(tmp_path).dockerfile  # not baked: from the environment


def test_a_baked_litert_version_gets_an_image_without_tensorflow(tmp_path: Path) -> None:
    """The tensorflow template's [formats.litert]: no TensorFlow layer, the function's TensorFlow
    pins commented out (saying why), not trainable in the image, the format in a label."""
    requirements = "tensorflow-cpu==2.21.0\nTF_Keras>=2  # old\npandas\n"
    make_function(tmp_path, files={"requirements.txt": requirements, "train.py": ""})
    weights = tmp_path / "weight.txt"
    weights.write_text("2.5")
    plan = plan_for(
        tmp_path, baked=BakedCheckpoint("weighted", 5, "e" * 64, {"m.tflite": weights}, b"{}", "litert")
    )
    files = {f.path: f.content() for f in plan.files}
    assert files["build/template-requirements.txt"] == b""
    assert files["build/function-requirements.txt"] == (
        b"# left out, a litert version does not need it: tensorflow-cpu==2.21.0\n"
        b"# left out, a litert version does not need it: TF_Keras>=2  # old\npandas\n"
    )
    assert plan.labels["io.fnserve.model-format"] == "litert"
    assert plan.labels["io.fnserve.trainable"] == "false"

    savedmodel = plan_for(
        tmp_path, baked=BakedCheckpoint("weighted", 4, "d" * 64, {"w": weights}, b"{}", "savedmodel")
    )
    files = {f.path: f.content() for f in savedmodel.files}
    assert files["build/template-requirements.txt"] == b"tensorflow-cpu==2.21.0\n"
    assert files["build/function-requirements.txt"].startswith(b"tensorflow-cpu==2.21.0\n")
    assert savedmodel.labels["io.fnserve.trainable"] == "true"
    assert savedmodel.labels["io.fnserve.model-format"] == "savedmodel"


def test_every_image_carries_the_litert_interpreter() -> None:
    """So an image that follows `latest` serves a LiteRT version fn optimize publishes."""
    assert any(r.startswith("ai-edge-litert==") for r in runtime_requirements())


def test_model_format_comes_from_the_baked_versions_descriptor(tmp_path: Path) -> None:
    from fnserve.images.inputs import _model_format

    assert _model_format(None, "v1") == "savedmodel"
    (tmp_path / "d.json").write_text('{"format": "litert", "path": "model.tflite"}')
    assert _model_format(tmp_path / "d.json", "v1") == "litert"
    (tmp_path / "d.json").write_text("[1]")
    with pytest.raises(BuildError, match=r"v1: fnserve-model\.json cannot be read"):
        _model_format(tmp_path / "d.json", "v1")


# --- what this host contributes ------------------------------------------------------------------------


def test_pip_config_keeps_reachable_indexes_only() -> None:
    items = {
        "global.index-url": "https://mirror.example/simple",
        "global.extra-index-url": "file:///opt/pypi/simple https://extra.example/simple",
        "global.find-links": "/opt/wheels",
        "global.constraint": "/etc/xdg/pip/constraints.txt",
        "global.cert": "/etc/ssl/certs/ca-certificates.crt",
        ":env:.default-timeout": "180",
        ":env:.index-url": "https://env.example/simple",
    }
    assert pip_config(items) == (
        "[global]\nextra-index-url = https://extra.example/simple\n"
        "index-url = https://env.example/simple\ntimeout = 180\n"
    )
    assert pip_config({"global.extra-index-url": "file:///opt/pypi/simple"}) == "[global]\n"


def test_ca_bundle_is_the_one_pip_uses(tmp_path: Path) -> None:
    bundle = tmp_path / "proxy-ca.pem"
    bundle.write_text("cert")
    assert ca_bundle({"global.cert": str(bundle)}, {}) == bundle
    assert ca_bundle({}, {"PIP_CERT": str(bundle)}) == bundle
    assert ca_bundle({"global.cert": "/nonexistent"}, {}) != Path("/nonexistent")


def test_runtime_requirements_are_pinned_as_installed_here() -> None:
    pins = runtime_requirements()
    names = {p.split("==")[0] for p in pins}
    assert {"starlette", "hypercorn", "fsspec", "numpy", "s3fs", "uvloop"} <= names
    assert not {"tensorflow-cpu", "docker", "kubernetes", "pytest"} & names  # no other extras
    assert all("==" in p for p in pins)
    uvloop = next(p for p in pins if p.startswith("uvloop=="))
    assert uvloop.endswith('; sys_platform != "win32"') or uvloop.endswith("; sys_platform != 'win32'")


def test_repo_examples_plan(tmp_path: Path) -> None:
    for name in ("recs", "tagger"):
        source = find_function(REPO, name)
        assert source.template == "tensorflow" and source.trainable
        assert [str(r) for r in source.checkpoints] == [f"{name}@latest"]
    assert os.path.islink(REPO / "templates") and (REPO / "templates" / "python" / "Dockerfile").is_file()

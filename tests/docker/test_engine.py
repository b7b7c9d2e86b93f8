"""Images, containers and container training, for real, against the local Docker engine.

Builds both example images (shared by the session), runs them and asks them for predictions,
trains in containers into a file store and into S3 (moto on loopback), and checks what the
images must not hold. A tiny plain-Python function (the `python` template) covers the rest
quickly: failures, baking, pushing to a real registry, `fn run` and Ctrl-C.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from fnserve.cli.main import cli
from fnserve.docker.running import serve_function
from fnserve.docker.training import TrainOptions, train_function
from fnserve.docker_engine import ContainerSpec, DockerEngine
from fnserve.images import BuildError
from fnserve.images.builds import build_image, prepare_build, push_image
from fnserve.images.inputs import host_inputs
from fnserve.images.plan import plan_build
from fnserve.images.source import find_function
from fnserve.images.templates import load_template
from fnserve.project import ProjectSettings
from fnserve.runtime.store import CheckpointStore

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FNS = Path(__file__).resolve().parents[1] / "support" / "fns"
RECS_QUERY = "user_country=NL&user_language=nl&day_of_week=5&season=winter&hotel_price=129.0&hotel_id=4711"
TAGS = {"balcony", "bed", "breakfast_buffet", "inside", "outside", "pool", "sea_view"}
FAULTY_TRAIN = """\
# Writes part of a version folder, then fails: nothing may be published.
import fsspec
from fnserve import TrainContext

ctx = TrainContext.from_env()
fs, root = fsspec.core.url_to_fs(ctx.store.location(ctx.function))
fs.makedirs(f"{root}/1", exist_ok=True)
fs.pipe_file(f"{root}/1/weight.txt", b"9")
raise SystemExit(3)
"""
WEIGHTED_TRAIN = """\
import os, pathlib, tempfile
from fnserve import TrainContext

ctx = TrainContext.from_env()
out = pathlib.Path(tempfile.mkdtemp())
(out / "weight.txt").write_text("3")
ctx.publish(out, metrics={"uid": os.getuid()})
"""


def project_settings(project: Path, **overrides: Any) -> ProjectSettings:
    return ProjectSettings.from_mapping(project, {}, {}, overrides)


def say(line: str) -> None:
    print(line)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with plain-Python functions: `weighted` (checkpoint v1 weight 2) and `faulty`."""
    project = tmp_path_factory.mktemp("tiny")
    for name, train in (("weighted", WEIGHTED_TRAIN), ("faulty", FAULTY_TRAIN)):
        folder = project / "functions" / name
        folder.mkdir(parents=True)
        shutil.copy(FNS / "weighted" / "predict.py", folder / "predict.py")
        (folder / "train.py").write_text(train)
        (folder / "function.toml").write_text('[build]\ntemplate = "python"\n')
    (project / "functions" / "faulty" / "predict.py").write_text(
        (FNS / "weighted" / "predict.py").read_text().replace("def weighted", "def faulty")
    )
    weights = project / "w"
    weights.mkdir()
    (weights / "weight.txt").write_text("2")
    CheckpointStore((project / ".fnserve" / "store").as_uri(), cache_dir=project / "c").publish(
        "weighted", weights
    )
    return project


@pytest.fixture(scope="module")
def tiny_image(docker_engine: DockerEngine, tiny: Path) -> Any:
    return build_image(prepare_build(project_settings(tiny), "weighted", docker_engine), docker_engine)


@pytest.fixture
def containers(docker_engine: DockerEngine) -> Iterator[list[str]]:
    """Containers a test started; removed after it, whatever happened."""
    started: list[str] = []
    yield started
    for container in started:
        docker_engine.remove(container)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the base image and the example images ----------------------------------------------------------


def test_base_image_is_local_debian_with_python_311(docker_engine: DockerEngine) -> None:
    base = docker_engine.image("fnserve/base:bookworm")
    assert base is not None and base.labels["org.opencontainers.image.title"] == "fnserve-base"
    spec = ContainerSpec(
        image="fnserve/base:bookworm", command=["python3", "-c", "import sys; print(sys.version)"]
    )
    container = docker_engine.run(spec)
    try:
        assert docker_engine.wait(container, 60) == 0
        assert "".join(docker_engine.logs(container)).startswith("3.11.")
    finally:
        docker_engine.remove(container)


def test_example_images_are_labelled_non_root_with_healthcheck(example_images: dict[str, Any]) -> None:
    for name, result in example_images.items():
        image = result.image
        assert f"fnserve/{name}:latest" in image.tags and result.plan.image in image.tags
        assert image.labels["io.fnserve.function"] == name
        assert image.labels["io.fnserve.checkpoint"] == f"{name}@latest"
        assert (
            image.labels["io.fnserve.fnserve-version"] and image.labels["io.fnserve.template"] == "tensorflow"
        )
        assert image.user == "10001:10001"
        assert image.healthcheck[0] == "CMD" and "/readyz" in " ".join(image.healthcheck)
        assert image.size_bytes < 2 * 2**30
        print(f"{result.plan.image}: {image.size_bytes / 2**20:.0f} MiB, built in {result.seconds:.1f} s")


def test_tagger_trains_in_its_container_and_serves_a_photo(
    docker_engine: DockerEngine, example_images: dict[str, Any], tmp_path: Path, containers: list[str]
) -> None:
    settings = project_settings(REPO, store=(tmp_path / "store").as_uri(), cache=str(tmp_path / "cache"))
    version = train_function(settings, "tagger", docker_engine, TrainOptions(cpus=2), on_output=say)
    assert version == 1 and docker_engine.containers("io.fnserve.role=train") == []
    running = serve_function(settings, "tagger", docker_engine, port=0, on_output=say)
    containers.append(running.id)
    print(f"tagger container ready in {running.seconds_to_ready:.1f} s")
    photo = io.BytesIO()
    Image.new("RGB", (80, 60), (40, 120, 220)).save(photo, "JPEG")
    answer = httpx.post(
        f"{running.url}/function/tagger", content=photo.getvalue(), headers={"Content-Type": "image/jpeg"}
    )
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
    (scores,) = answer.json()["predictions"]
    assert set(scores) == TAGS and all(0 <= s <= 1 for s in scores.values())


def test_recs_trains_in_a_container_into_s3_and_the_served_version_follows(
    docker_engine: DockerEngine,
    example_images: dict[str, Any],
    s3_server: str,
    s3_store_root: tuple[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    containers: list[str],
) -> None:
    root, options = s3_store_root
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # train.py reads its data through plain fsspec
    data = root.replace("/store", "/data/bookings.parquet")
    written = subprocess.run(
        [sys.executable, "functions/recs/train.py", "--write-data", data, "--rows", "30000"],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    settings = ProjectSettings.from_mapping(
        REPO, {"store": {"options": options}}, {}, {"store": root, "cache": str(tmp_path / "cache")}
    )
    limits = TrainOptions(data=data, cpus=2, memory_bytes=4 * 2**30)
    assert train_function(settings, "recs", docker_engine, limits, on_output=say) == 1
    store = CheckpointStore(root, storage_options=options, cache_dir=tmp_path / "cache")
    assert store.manifest("recs", 1).metadata["data"] == data  # trained on the Parquet data set

    running = serve_function(
        settings, "recs", docker_engine, port=0, on_output=say
    )  # host network: S3 on loopback
    containers.append(running.id)
    first = httpx.get(f"{running.url}/function/recs?{RECS_QUERY}")
    assert first.status_code == 200 and first.headers["X-Model-Version"] == "1"
    assert 0 < first.json()["predictions"][0] < 1

    assert train_function(settings, "recs", docker_engine, TrainOptions(), on_output=say) == 2
    deadline = time.monotonic() + 60  # the runtime looks for a newer `latest` every reload_interval_s
    while httpx.get(f"{running.url}/function/recs?{RECS_QUERY}").headers["X-Model-Version"] != "2":
        assert time.monotonic() < deadline, "the container did not pick up version 2"
        time.sleep(1)


def test_code_only_change_rebuilds_in_seconds(
    docker_engine: DockerEngine, example_images: dict[str, Any], tmp_path: Path
) -> None:
    shutil.copytree(
        REPO / "functions" / "recs",
        tmp_path / "functions" / "recs",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    settings = project_settings(tmp_path)
    first = build_image(prepare_build(settings, "recs", docker_engine), docker_engine)
    with (tmp_path / "functions" / "recs" / "predict.py").open("a") as source:
        source.write("\n# a code-only change\n")
    second = build_image(prepare_build(settings, "recs", docker_engine), docker_engine)
    assert not second.reused and second.plan.tag != first.plan.tag
    print(f"recs rebuild after a code-only change: {second.seconds:.1f} s")
    assert second.seconds < 30
    docker_engine.remove_image(first.plan.image)
    docker_engine.remove_image(second.plan.image)


# --- what an image must not hold ------------------------------------------------------------------


def test_no_build_secrets_or_host_paths_in_any_layer_label_or_history(
    docker_engine: DockerEngine, tiny: Path, tiny_image: Any
) -> None:
    source = find_function(tiny, "weighted")
    base = docker_engine.image("fnserve/base:bookworm")
    assert base is not None
    canary = "fnserve-canary-0c7f9e1d"
    inputs = host_inputs(base.id)
    inputs = replace(inputs, pip_config=f"{inputs.pip_config}# index password {canary}\n")
    plan = plan_build(source, load_template("python"), inputs, base_image="fnserve/base:bookworm")
    built = build_image(plan, docker_engine)
    try:
        host_paths = [str(tiny), str(REPO), "/root", str(Path(sys.executable).parent)]
        history = "\n".join(docker_engine.history(plan.image))
        config = " ".join([*built.image.env, *built.image.labels.values(), *built.image.labels])
        for text in (history, config):
            assert canary not in text and not any(path in text for path in host_paths)
        names, tail = [], b""
        stream = b"".join(docker_engine.save(plan.image))  # a few hundred MiB for the python template
        assert canary.encode() not in stream
        with tarfile.open(fileobj=io.BytesIO(stream)) as saved:
            for member in saved.getmembers():
                if member.name.endswith("layer.tar"):
                    with tarfile.open(fileobj=saved.extractfile(member)) as layer:  # type: ignore[arg-type]
                        names += layer.getnames()
        assert not any("fnserve-build" in name or name.endswith("pip.conf") for name in names)
        assert "srv/functions/weighted/predict.py" in names and tail == b""
    finally:
        docker_engine.remove_image(plan.image)


# --- failures -------------------------------------------------------------------------------------


def test_failed_build_shows_the_step_and_its_log(docker_engine: DockerEngine, tmp_path: Path) -> None:
    folder = tmp_path / "functions" / "broken"
    folder.mkdir(parents=True)
    shutil.copy(FNS / "weighted" / "predict.py", folder / "predict.py")
    (folder / "requirements.txt").write_text("fnserve-no-such-package-4b1d==1.0\n")
    code, output = in_project(tmp_path, ["build", "broken", "--template", "python"])
    assert code == 1 and "Traceback" not in output
    assert "build failed at step" in output and "function-requirements.txt" in output
    assert "fnserve-no-such-package-4b1d" in output  # pip's own complaint, from the step's log


def in_project(project: Path, args: list[str]) -> tuple[int, str]:
    """`fn ARGS` in-process, run from ``project``."""
    old = Path.cwd()
    os.chdir(project)
    try:
        result = CliRunner().invoke(cli, args, env={"COLUMNS": "200"}, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


def test_failed_training_publishes_nothing_and_leaves_no_container(
    docker_engine: DockerEngine, tiny: Path
) -> None:
    settings = project_settings(tiny)
    with pytest.raises(BuildError, match=r"exit code 3\); nothing was published"):
        train_function(settings, "faulty", docker_engine, TrainOptions(memory_bytes=2**30), on_output=say)
    code, output = in_project(tiny, ["train", "faulty", "--in-container", "--memory", "1g"])
    assert code == 1 and "nothing was published" in output and "Traceback" not in output
    store = CheckpointStore(settings.store, cache_dir=tiny / "c")
    assert store.versions("faulty") == [] and store.latest("faulty") is None
    assert docker_engine.containers("io.fnserve.function=faulty") == []


def test_training_in_container_publishes_as_this_user(docker_engine: DockerEngine, tiny: Path) -> None:
    settings = project_settings(tiny)
    code, output = in_project(tiny, ["train", "weighted", "--in-container", "--cpus", "1"])
    assert code == 0 and "weighted: published version 2" in output, output
    store = CheckpointStore(settings.store, cache_dir=tiny / "c")
    assert store.manifest("weighted", 2).metadata["metrics"]["uid"] == os.getuid()
    assert (tiny / ".fnserve" / "store" / "weighted" / "2" / "weight.txt").stat().st_uid == os.getuid()


# --- baking, pushing, fn run --------------------------------------------------------------------------


def test_baked_checkpoint_serves_without_store_access(
    docker_engine: DockerEngine, tiny: Path, tiny_image: Any, tmp_path: Path, containers: list[str]
) -> None:
    settings = project_settings(tiny, cache=str(tmp_path / "cache"))
    plan = prepare_build(settings, "weighted", docker_engine, bake="1")
    built = build_image(plan, docker_engine)
    assert built.image.labels["io.fnserve.checkpoint"] == "weighted@1"
    assert built.image.labels["io.fnserve.checkpoint-baked"].startswith("sha256:")
    # :latest is now the baked image; serve it while the project store is elsewhere (empty).
    elsewhere = project_settings(tiny, store=(tmp_path / "empty").as_uri())
    running = serve_function(elsewhere, "weighted", docker_engine, port=0, on_output=say)
    containers.append(running.id)
    answer = httpx.get(f"{running.url}/function/weighted?x=4")
    assert answer.json() == {"predictions": [8.0]} and answer.headers["X-Model-Version"] == "1"
    docker_engine.tag(tiny_image.image.id, tiny_image.plan.latest)  # back to the unbaked image
    docker_engine.remove_image(plan.image)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A real image registry (Debian's docker-registry) on loopback: ``127.0.0.1:PORT``."""
    binary = shutil.which("docker-registry")
    if binary is None:
        message = "docker-registry is not installed (scripts/ensure-docker installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog: {{level: warn}}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: {address}}}\n"
    )
    proc = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://{address}/v2/").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the registry did not start"
            time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


def test_push_to_the_configured_registry(
    docker_engine: DockerEngine, tiny: Path, tiny_image: Any, registry: str
) -> None:
    settings = project_settings(tiny, registry=f"{registry}/team")
    pushed = push_image(tiny_image.plan, docker_engine, settings.registry, on_output=say)
    assert pushed == list(tiny_image.plan.remote(f"{registry}/team"))
    tags = httpx.get(f"http://{registry}/v2/team/fnserve/weighted/tags/list").json()["tags"]
    assert set(tags) == {tiny_image.plan.tag, "latest"}
    for ref in pushed:
        docker_engine.remove_image(ref)
    with pytest.raises(BuildError, match="no registry configured"):
        push_image(tiny_image.plan, docker_engine, "", on_output=say)


def test_fn_run_serves_until_ctrl_c_then_removes_the_container(
    docker_engine: DockerEngine, tiny: Path, tiny_image: Any
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fnserve.cli", "run", "weighted", "--port", str(port)],
        cwd=tiny,
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "ready in" in line:
                break
        assert any("ready in" in line for line in lines), "".join(lines)
        answer = httpx.get(f"http://127.0.0.1:{port}/function/weighted?x=1.5")
        assert answer.json()["predictions"][0] in (3.0, 4.5)  # weight 2 (v1) or 3 (v2, if trained first)
        assert len(docker_engine.containers("io.fnserve.function=weighted")) == 1
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "stopping weighted" in output and "Traceback" not in output
    assert docker_engine.containers("io.fnserve.function=weighted") == []

"""``[train] schedule`` on the docker target, for real: the gateway runs train.py in a container of
the deployed image at the due times of a clock 60 times too fast, with the data of ``[train] data``
mounted, into a ``file://`` store; the container goes when the run ends, a version is published as
this user, and the run shows in /admin/status and /metrics."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fnserve.docker.replicas import PROJECT_LABEL, project_id
from fnserve.docker_engine import DockerEngine
from fnserve.images.builds import build_image, prepare_build
from fnserve.runtime.store import CheckpointStore
from tests.local.test_scheduled_training import fast_clock
from tests.support.dockertarget import deployment, docker_gateway, private_network, project_settings
from tests.support.gateways import FNS, until
from tests.support.training import WEIGHT_FROM_DATA

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "functions" / "weighted"
    folder.mkdir(parents=True)
    shutil.copy(FNS / "weighted" / "predict.py", folder / "predict.py")
    (folder / "train.py").write_text(WEIGHT_FROM_DATA)
    (tmp_path / "store").mkdir()  # empty: the first scheduled run publishes version 1
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "weight.txt").write_text("7\n")
    data = (tmp_path / "data" / "weight.txt").as_uri()
    (folder / "function.toml").write_text(
        f'[build]\ntemplate = "python"\n[train]\nschedule = "* * * * *"\ndata = "{data}"\n'
    )
    return tmp_path


@pytest.fixture
def network(docker_engine: DockerEngine, project: Path) -> Iterator[str]:
    with private_network(docker_engine, project) as name:
        yield name


def test_a_scheduled_run_trains_in_a_container_of_the_deployed_image(
    project: Path, network: str, docker_engine: DockerEngine
) -> None:
    image = build_image(
        prepare_build(project_settings(project), "weighted", docker_engine), docker_engine
    ).plan.image
    d = deployment(image, ("1", 100, "latest"), min_replicas=0)
    with docker_gateway(project, network, [d], clock=fast_clock()) as gw:

        def done() -> list[dict]:  # type: ignore[type-arg]
            runs = gw.admin("GET", "/functions/weighted")["training"]["runs"]
            return [r for r in runs if r["outcome"] in ("ok", "failed")]

        [first, *_] = reversed(until(done, "a scheduled run in a container to end", 120))
        metrics = httpx.get(f"{gw.url}/metrics").text
    assert first["outcome"] == "ok", first["reason"]
    store = CheckpointStore((project / "store").as_uri(), cache_dir=project / "check-cache")
    assert first["version"] == 1 and store.manifest("weighted", 1).metadata["metrics"] == {"weight": 7.0}
    assert 'fnserve_training_runs_total{function="weighted",outcome="ok"}' in metrics
    assert 'fnserve_training_last_published_version{function="weighted"} 1.0' in metrics
    mine = {PROJECT_LABEL: project_id(project), "io.fnserve.role": "train"}
    assert docker_engine.list_containers(mine) == []  # born to do its job, then gone

"""A fresh server serves the newest version that verifies and loads, over file://, memory:// and S3.

A corrupt version, one whose loader fails and one whose manifest is not fully written are passed
over (and reported in /functions, /metrics and the log); a store that fails for a moment is retried
without holding it against the version; publishing never shows a partial manifest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from starlette.testclient import TestClient

from fnserve.runtime import versions
from fnserve.runtime.app import create_app
from fnserve.runtime.loader import discover
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings
from fnserve.runtime.store import MANIFEST_NAME, CheckpointStore
from tests.runtime.test_app_versions import predict, until, weighted_info
from tests.support.serving import start_serve, stop

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


@dataclass
class Backend:
    """One real store, and the publisher's handle on it (a training job's)."""

    kind: str
    root: str
    options: dict[str, Any]
    publisher: CheckpointStore
    fs: AbstractFileSystem
    base: str  # the root as the file system names it

    def publish(self, weight: str) -> int:
        folder = Path(self.publisher.cache_dir).parent / f"weights-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        (folder / "weight.txt").write_text(weight)
        return self.publisher.publish("weighted", folder)

    def path(self, version: int, name: str) -> str:
        return f"{self.base}/weighted/{version}/{name}"


@pytest.fixture(params=["file", "memory", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    kind = str(request.param)
    if kind == "s3":
        root, options = request.getfixturevalue("s3_store_root")
    elif kind == "memory":
        root, options = f"memory://newest-{uuid.uuid4().hex[:8]}/store", {}
    else:
        root, options = f"file://{tmp_path}/store", {}
    publisher = CheckpointStore(root, storage_options=options, cache_dir=tmp_path / "publisher" / "cache")
    publisher.cache_dir.parent.mkdir()
    fs, base = url_to_fs(root, **options)
    return Backend(kind, root, options, publisher, fs, base.rstrip("/"))


@contextlib.contextmanager
def serving(backend: Backend, tmp_path: Path, *, version: str | None = None) -> Iterator[TestClient]:
    """The app in-process over ``backend`` (lifespan on, so models load in the background)."""
    settings = Settings.from_mapping(
        tmp_path,
        {"store": {"options": backend.options}},
        {},
        {"store": backend.root, "cache": str(tmp_path / "cache"), "reload_interval_s": 0.2},
    )
    versions_ = {"weighted": version} if version else None
    runtime = Runtime(discover([FNS / "weighted"]), settings, versions=versions_)
    with TestClient(create_app(runtime)) as client:
        yield client


def failure_metric(client: TestClient, version: int, reason: str) -> float | None:
    return metric_value(client.get("/metrics").text, version, reason)


def metric_value(metrics: str, version: int, reason: str) -> float | None:
    labels = f'function="weighted",reason="{reason}",version="{version}"'  # as the exposition sorts them
    for line in metrics.splitlines():
        if line.startswith(f"fnserve_checkpoint_load_failures_total{{{labels}}} "):
            return float(line.split()[-1])
    return None


def skip_lines(caplog: pytest.LogCaptureFixture, version: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"version {version} not loaded" in r.getMessage()]


def damage_file(backend: Backend) -> tuple[str, str]:
    """Version 2 published, then one byte of its file changed (same size): its sha256 differs."""
    assert backend.publish("3") == 2
    backend.fs.pipe_file(backend.path(2, "weight.txt"), b"7")
    return "corrupt", "weight.txt is corrupt: its sha256 differs from the manifest's"


def failing_loader(backend: Backend) -> tuple[str, str]:
    """Version 2 verifies, but the loader cannot read it."""
    assert backend.publish("garbage") == 2
    return "loader", "loader of 'weighted' failed: ValueError"


@pytest.mark.parametrize("make_bad", [damage_file, failing_loader])
def test_a_fresh_server_passes_over_a_bad_newest_version(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture, make_bad: Any
) -> None:
    caplog.set_level(logging.INFO)
    assert backend.publish("2") == 1
    reason, error = make_bad(backend)
    with serving(backend, tmp_path) as client:
        until(lambda: client.get("/readyz").status_code == 200, "readiness with version 1", timeout_s=20)
        assert predict(client) == (200, "1", {"predictions": [6.0]})
        info = weighted_info(client)
        assert info["version"] == 1 and info["ready"] is True
        (skipped,) = info["skipped_versions"]
        assert skipped["version"] == 2 and skipped["reason"] == reason and error in skipped["error"]
        assert "\n" not in skipped["error"] and info["error"].startswith("version 2: ")
        assert failure_metric(client, 2, reason) == 1.0
        assert len(skip_lines(caplog, 2)) == 1

        time.sleep(0.6)  # reload intervals go by: the bad version is not tried again
        assert backend.publish("5") == 3  # a newer version: served, and the bad one forgotten
        until(lambda: predict(client)[1] == "3", "version 3")
        assert predict(client) == (200, "3", {"predictions": [15.0]})
        info = weighted_info(client)
        assert info["skipped_versions"] == [] and info["error"] is None
        assert failure_metric(client, 2, reason) == 1.0 and len(skip_lines(caplog, 2)) == 1


def test_every_version_bad_keeps_the_server_unready_naming_them(backend: Backend, tmp_path: Path) -> None:
    assert backend.publish("garbage") == 1
    damage_file(backend)
    with serving(backend, tmp_path) as client:
        info = until(lambda: weighted_info(client)["error"] and weighted_info(client), "a load attempt")
        assert client.get("/readyz").status_code == 503
        assert [(s["version"], s["reason"]) for s in info["skipped_versions"]] == [
            (2, "corrupt"),
            (1, "loader"),
        ]
        assert info["error"].startswith("no version of checkpoint 'weighted' verifies and loads")
        assert backend.publish("4") == 3
        until(lambda: client.get("/readyz").status_code == 200, "readiness with version 3")
        assert predict(client) == (200, "3", {"predictions": [12.0]})


@pytest.mark.parametrize("partial", [b"", b'{"format": 1, "name": "weig'])
def test_a_half_published_newest_version_is_served_once_complete(
    backend: Backend, tmp_path: Path, partial: bytes
) -> None:
    assert backend.publish("2") == 1
    assert backend.publish("5") == 2
    manifest = backend.path(2, MANIFEST_NAME)
    complete = backend.fs.cat_file(manifest)
    backend.fs.pipe_file(manifest, partial)  # what an in-place write shows a reader, part-way
    with serving(backend, tmp_path) as client:
        until(lambda: client.get("/readyz").status_code == 200, "readiness with version 1", timeout_s=20)
        assert predict(client) == (200, "1", {"predictions": [6.0]})
        (skipped,) = weighted_info(client)["skipped_versions"]
        assert skipped["version"] == 2 and skipped["reason"] == "unpublished"
        assert "not published yet" in skipped["error"]
        backend.fs.pipe_file(manifest, complete)  # the publisher finishes
        until(lambda: predict(client)[1] == "2", "version 2 once its manifest is complete")
        assert predict(client) == (200, "2", {"predictions": [15.0]})
        assert weighted_info(client)["skipped_versions"] == []


class FlakyDownloads:
    """The store's file system, whose first ``failures`` downloads fail as a network blip would."""

    def __init__(self, fs: AbstractFileSystem, kind: str, state: dict[str, int]):
        self._fs, self._kind, self._state = fs, kind, state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def get_file(self, *args: Any, **kwargs: Any) -> Any:
        if self._state["left"] > 0:
            self._state["left"] -= 1
            if self._kind == "s3":
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
            if self._kind == "memory":
                raise ConnectionResetError("connection reset by peer")
            raise OSError(errno.EIO, "Input/output error")
        return self._fs.get_file(*args, **kwargs)


@pytest.mark.parametrize("failures", [2, versions.ATTEMPTS + 1])  # within one load; past it, to the next
def test_a_storage_blip_while_loading_a_new_version_is_retried(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int
) -> None:
    monkeypatch.setattr(versions, "FIRST_PAUSE_S", 0.05)
    assert backend.publish("2") == 1
    with serving(backend, tmp_path) as client:
        until(lambda: client.get("/readyz").status_code == 200, "readiness with version 1", timeout_s=20)
        state = {"left": failures}
        store = client.app.state.runtime.store  # type: ignore[attr-defined]  # the server's, not the publisher's
        real = store._filesystem

        def flaky(url: str) -> tuple[Any, str]:
            fs, path = real(url)
            return FlakyDownloads(fs, backend.kind, state), path

        monkeypatch.setattr(store, "_filesystem", flaky)
        assert backend.publish("5") == 2
        until(lambda: predict(client)[1] == "2", "version 2 after the blip", timeout_s=20)
        assert state["left"] == 0
        info = weighted_info(client)
        assert info["skipped_versions"] == [] and info["error"] is None
        assert "fnserve_checkpoint_load_failures_total{" not in client.get("/metrics").text


def test_a_pinned_bad_version_is_not_replaced_by_another(backend: Backend, tmp_path: Path) -> None:
    assert backend.publish("2") == 1
    damage_file(backend)
    with serving(backend, tmp_path, version="2") as client:
        info = until(lambda: weighted_info(client)["error"] and weighted_info(client), "a load attempt")
        assert client.get("/readyz").status_code == 503 and info["version"] is None
        assert "weight.txt is corrupt" in info["error"]


WRITES = ("pipe_file", "pipe", "put_file", "put", "open", "mv", "copy", "cp_file")


def test_publishing_moves_a_complete_manifest_into_place(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest path is only ever the target of a move: readers see no manifest or all of it."""
    calls: list[tuple[str, str]] = []
    depth = [0]  # what the store calls, not what a file system calls inside it
    real = backend.publisher._filesystem

    def recorder(name: str, method: Any) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                target = args[1] if name in ("mv", "copy", "cp_file", "put_file", "put") else args[0]
                calls.append((name, str(target)))
            depth[0] += 1
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1

        return recorded

    def recording(url: str) -> tuple[Any, str]:
        fs, path = real(url)
        if not getattr(fs, "_recorded", False):
            monkeypatch.setattr(fs, "_recorded", True, raising=False)
            for name in WRITES:
                monkeypatch.setattr(fs, name, recorder(name, getattr(fs, name)))
        return fs, path

    monkeypatch.setattr(backend.publisher, "_filesystem", recording)
    assert backend.publish("2") == 1
    manifest = backend.path(1, MANIFEST_NAME)
    assert [(name, target) for name, target in calls if target == manifest] == [("mv", manifest)], calls
    assert any(name == "put_file" for name, _ in calls)  # the recorder saw the upload too
    listed = sorted(p.rsplit("/", 1)[-1] for p in backend.fs.ls(backend.path(1, ""), detail=False))
    assert listed == [MANIFEST_NAME, "weight.txt"]  # no temporary name left behind
    assert json.loads(backend.fs.cat_file(backend.path(1, MANIFEST_NAME)))["version"] == 1


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_fn_serve_starts_on_the_newest_good_version(tmp_path: Path) -> None:
    """The real process: `fn serve` with a corrupt newest version turns ready on the one before."""
    store = CheckpointStore(f"file://{tmp_path}/store", cache_dir=tmp_path / "publisher-cache")
    for weight in ("2", "3"):
        folder = tmp_path / f"w{weight}"
        folder.mkdir()
        (folder / "weight.txt").write_text(weight)
        store.publish("weighted", folder)
    (tmp_path / "store" / "weighted" / "2" / "weight.txt").write_text("7")
    served = start_serve(tmp_path, FNS / "weighted", extra_env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        answer = get_json(f"{served.url}/function/weighted?x=3")
        (info,) = get_json(f"{served.url}/functions")["functions"]
        metrics = urllib.request.urlopen(f"{served.url}/metrics", timeout=10).read().decode()
    finally:
        stop(served)
    assert answer == {"predictions": [6.0]} and info["version"] == 1
    assert [(s["version"], s["reason"]) for s in info["skipped_versions"]] == [(2, "corrupt")]
    assert metric_value(metrics, 2, "corrupt") == 1.0
    assert sum("version 2 not loaded" in line for line in served.output) == 1

"""The checkpoint store against real fsspec protocols: memory://, file:// and S3 (moto on loopback)."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec import AbstractFileSystem

from fnserve.runtime.errors import CheckpointCorrupt, CheckpointError, CheckpointNotFound, StorageUnavailable
from fnserve.runtime.store import MANIFEST_NAME, CheckpointStore, Manifest

WEIGHTS = b"\x00\x01weights" * 1000


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CheckpointStore]:
    options: dict[str, Any] = {}
    if request.param == "memory":
        root = f"memory://fnserve-test-{uuid.uuid4().hex}"
    elif request.param == "file":
        root = (tmp_path / "store").as_uri()
    else:
        root, options = request.getfixturevalue("s3_store_root")
    yield CheckpointStore(root, storage_options=options, cache_dir=tmp_path / "cache")
    fs, path = remote(root)
    if request.param == "memory" and fs.exists(path):
        fs.rm(path, recursive=True)


def remote(url: str, options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    return fs, path


def write_remote(store: CheckpointStore, rel: str, data: bytes) -> None:
    fs, path = remote(f"{store.root}/{rel}", store.storage_options)
    if path.startswith("/"):  # a local folder must exist before a write
        fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe_file(path, data)


def make_model(tmp_path: Path, weights: bytes = WEIGHTS) -> Path:
    folder = tmp_path / f"model-{uuid.uuid4().hex[:8]}"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.data").write_bytes(weights)
    return folder


def cache_entries(store: CheckpointStore) -> list[str]:
    return sorted(p.name for p in store.cache_dir.iterdir()) if store.cache_dir.exists() else []


def test_publish_numbers_versions_and_fetch_returns_a_verified_copy(
    store: CheckpointStore, tmp_path: Path
) -> None:
    assert store.versions("recs") == [] and store.latest("recs") is None
    assert store.publish("recs", make_model(tmp_path, b"old"), metadata={"metrics": {"auc": 0.7}}) == 1
    assert store.publish("recs", make_model(tmp_path), metadata={"metrics": {"auc": 0.8}}) == 2
    assert store.versions("recs") == [1, 2] and store.latest("recs") == 2

    manifest = store.manifest("recs", 2)
    assert sorted(manifest.files) == ["saved_model.pb", "variables/variables.data"]
    assert manifest.files["variables/variables.data"].size == len(WEIGHTS)
    assert manifest.metadata["metrics"] == {"auc": 0.8} and manifest.version == 2

    checkpoint = store.fetch("recs")
    assert checkpoint.version == 2 and checkpoint.url == f"{store.root}/recs/2"
    assert (checkpoint.path / "variables" / "variables.data").read_bytes() == WEIGHTS
    assert (store.fetch("recs", 1).path / "variables" / "variables.data").read_bytes() == b"old"
    assert store.fetch("recs", "2").path == checkpoint.path


def test_versions_without_manifest_are_ignored_and_never_reused(
    store: CheckpointStore, tmp_path: Path
) -> None:
    store.publish("recs", make_model(tmp_path))
    write_remote(store, "recs/2/saved_model.pb", b"half written")  # a publisher that died mid-way
    write_remote(store, "recs/notes/readme.txt", b"not a version")
    assert store.versions("recs") == [1] and store.latest("recs") == 1
    with pytest.raises(CheckpointNotFound, match=r"no published version 2 .*published: 1"):
        store.fetch("recs", 2)
    assert store.publish("recs", make_model(tmp_path)) == 3


def test_second_fetch_uses_the_cache_without_downloading(store: CheckpointStore, tmp_path: Path) -> None:
    store.publish("recs", make_model(tmp_path))
    first = store.fetch("recs")
    fs, path = remote(f"{first.url}/variables/variables.data", store.storage_options)
    fs.rm_file(path)  # a download would now fail
    again = CheckpointStore(store.root, storage_options=store.storage_options, cache_dir=store.cache_dir)
    assert again.fetch("recs").path == first.path
    assert (first.path / "variables" / "variables.data").read_bytes() == WEIGHTS


@pytest.mark.parametrize("damage", ["flipped", "truncated", "missing"])
def test_corrupt_files_are_refused_and_leave_nothing_in_the_cache(
    store: CheckpointStore, tmp_path: Path, damage: str
) -> None:
    store.publish("recs", make_model(tmp_path))
    fs, path = remote(f"{store.root}/recs/1/variables/variables.data", store.storage_options)
    if damage == "missing":
        fs.rm_file(path)
    else:
        fs.pipe_file(path, WEIGHTS[::-1] if damage == "flipped" else WEIGHTS[:-1])
    with pytest.raises(CheckpointCorrupt, match=r"recs/1/variables/variables\.data"):
        store.fetch("recs")
    assert cache_entries(store) == []


def test_only_files_in_the_manifest_are_fetched(store: CheckpointStore, tmp_path: Path) -> None:
    store.publish("recs", make_model(tmp_path))
    write_remote(store, "recs/1/extra.bin", b"added after publishing")
    checkpoint = store.fetch("recs")
    assert not (checkpoint.path / "extra.bin").exists()
    assert (checkpoint.path / "saved_model.pb").read_bytes() == b"graph"


def test_manifest_escaping_the_version_folder_is_refused(store: CheckpointStore) -> None:
    entry = {"sha256": "0" * 64, "size": 1}
    manifest = {"format": 1, "name": "recs", "version": 1, "created": "x", "files": {"../evil": entry}}
    write_remote(store, "recs/1/" + MANIFEST_NAME, json.dumps(manifest).encode())
    with pytest.raises(CheckpointCorrupt, match=r"recs/1/fnserve-manifest.json.*unsafe path '\.\./evil'"):
        store.fetch("recs")
    assert cache_entries(store) == []


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "/etc/passwd", "a\\b", "./a", "a//b", "", MANIFEST_NAME, ".fnserve-verified"],
)
def test_manifest_parse_refuses_unsafe_paths(path: str) -> None:
    doc = {
        "format": 1,
        "name": "r",
        "version": 1,
        "created": "",
        "files": {path: {"sha256": "a" * 64, "size": 0}},
    }
    with pytest.raises(CheckpointCorrupt, match="s3://b/r/1"):
        Manifest.parse(json.dumps(doc).encode(), where="s3://b/r/1")


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"\xff", b"[]", b'{"format": 2}', b'{"format": 1, "name": "r", "version": 0}',
     b'{"format": 1, "name": "r", "version": 1, "created": "", "files": {"a": {"sha256": "x", "size": 1}}}'],
)  # fmt: skip
def test_manifest_parse_refuses_bad_documents(data: bytes) -> None:
    with pytest.raises(CheckpointCorrupt, match=r"^where: "):
        Manifest.parse(data, where="where")


def test_concurrent_fetches_share_one_cached_copy(store: CheckpointStore, tmp_path: Path) -> None:
    store.publish("recs", make_model(tmp_path))
    start = threading.Barrier(6)

    def fetch(i: int) -> Path:
        loader = store if i % 2 else CheckpointStore(store.root, storage_options=store.storage_options,
                                                     cache_dir=store.cache_dir)  # fmt: skip
        start.wait()
        return loader.fetch("recs").path

    with ThreadPoolExecutor(6) as pool:
        paths = set(pool.map(fetch, range(6)))
    assert len(paths) == 1 and cache_entries(store) == [paths.pop().name]
    assert (store.fetch("recs").path / "variables" / "variables.data").read_bytes() == WEIGHTS


@pytest.mark.parametrize("store", ["file", "s3"], indirect=True)  # memory:// is private to one process
def test_concurrent_processes_share_one_cached_copy(store: CheckpointStore, tmp_path: Path) -> None:
    store.publish("recs", make_model(tmp_path))
    script = (
        "import json, sys; from pathlib import Path; from fnserve.runtime.store import CheckpointStore; "
        "root, options, cache = json.loads(sys.argv[1]); "
        "print(CheckpointStore(root, storage_options=options, cache_dir=Path(cache)).fetch('recs').path)"
    )
    args = json.dumps([store.root, store.storage_options, str(store.cache_dir)])
    loaders = [
        subprocess.Popen([sys.executable, "-c", script, args], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    paths = {loader.communicate(timeout=60)[0].strip() for loader in loaders}
    assert [loader.returncode for loader in loaders] == [0] * 4
    assert len(paths) == 1 and cache_entries(store) == [Path(paths.pop()).name]


def test_a_download_that_loses_the_race_keeps_the_winners_copy(
    store: CheckpointStore, tmp_path: Path
) -> None:
    store.publish("recs", make_model(tmp_path))
    winner = store.fetch("recs")
    store._download(winner.url, winner.manifest, winner.path)  # as if another process had been faster
    assert cache_entries(store) == [winner.path.name]
    assert (winner.path / "variables" / "variables.data").read_bytes() == WEIGHTS


def test_an_unverified_cache_entry_is_replaced(store: CheckpointStore, tmp_path: Path) -> None:
    store.publish("recs", make_model(tmp_path))
    first = store.fetch("recs")
    (first.path / ".fnserve-verified").unlink()  # e.g. copied in by hand
    (first.path / "saved_model.pb").write_bytes(b"tampered")
    assert (store.fetch("recs").path / "saved_model.pb").read_bytes() == b"graph"
    assert cache_entries(store) == [first.path.name]


def test_a_long_running_reader_sees_new_versions(store: CheckpointStore, tmp_path: Path) -> None:
    store.publish("recs", make_model(tmp_path))
    assert store.latest("recs") == 1  # the listing is now in fsspec's cache
    # Another process publishes, through a file-system instance of its own.
    other = CheckpointStore(
        store.root, storage_options={**store.storage_options, "skip_instance_cache": True}
    )
    assert other.publish("recs", make_model(tmp_path)) == 2
    assert store.latest("recs") == 2 and store.versions("recs") == [1, 2]


def test_unknown_checkpoint_is_not_found_naming_store_and_name(store: CheckpointStore) -> None:
    with pytest.raises(CheckpointNotFound, match=rf"'nope'.*{store.root}/nope"):
        store.fetch("nope")
    with pytest.raises(CheckpointNotFound, match="'nope'"):
        store.manifest("nope", 3)


def test_full_url_names_are_used_as_the_versions_folder(store: CheckpointStore, tmp_path: Path) -> None:
    url = f"{store.root}/elsewhere/Recs.v2"
    assert store.location(url) == url
    assert store.publish(url, make_model(tmp_path)) == 1
    assert store.fetch(url).url == f"{url}/1"


@pytest.mark.parametrize("name", ["Recs", "../x", "a/b", "", "x" * 64, "1abc"])
def test_bad_names_are_rejected(name: str, tmp_path: Path) -> None:
    store = CheckpointStore("memory://fnserve-names", cache_dir=tmp_path)
    for call in (store.versions, store.fetch, lambda n: store.publish(n, make_model(tmp_path))):
        with pytest.raises(ValueError, match="not a valid name"):
            call(name)


@pytest.mark.parametrize("version", [0, -1, "abc", True, "01x"])
def test_bad_versions_are_rejected(version: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="version"):
        CheckpointStore("memory://fnserve-versions", cache_dir=tmp_path).fetch("recs", version)


def test_publish_refuses_empty_folders_links_out_and_bad_metadata(
    store: CheckpointStore, tmp_path: Path
) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="holds no files"):
        store.publish("recs", tmp_path / "empty")
    model = make_model(tmp_path)
    (tmp_path / "secret").write_text("outside")
    (model / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(CheckpointError, match="links outside"):
        store.publish("recs", model)
    (model / "leak").unlink()
    (model / "weights-link").symlink_to(model / "variables" / "variables.data")  # inside: fine
    with pytest.raises(ValueError, match="plain JSON"):
        store.publish("recs", model, metadata={"when": object()})
    assert store.versions("recs") == []
    assert store.publish("recs", model) == 1
    assert (store.fetch("recs").path / "weights-link").read_bytes() == WEIGHTS


def test_an_unreachable_s3_endpoint_is_storage_unavailable(s3_env: None, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "key": "testing",
        "secret": "testing",
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
    }
    store = CheckpointStore("s3://down/store", storage_options=options, cache_dir=tmp_path)
    started = time.monotonic()
    for call in (store.versions, store.fetch, lambda n: store.publish(n, make_model(tmp_path))):
        with pytest.raises(StorageUnavailable, match="s3://down/store/recs"):
            call("recs")
    assert time.monotonic() - started < 15


def test_http_is_a_read_only_store(tmp_path: Path) -> None:
    writer = CheckpointStore((tmp_path / "site").as_uri(), cache_dir=tmp_path / "unused")
    writer.publish("recs", make_model(tmp_path))
    writer.publish("recs", make_model(tmp_path, b"newer"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            reader = CheckpointStore(f"http://127.0.0.1:{server.server_port}", cache_dir=tmp_path / "cache")
            assert reader.versions("recs") == [1, 2]
            assert (reader.fetch("recs").path / "variables" / "variables.data").read_bytes() == b"newer"
        finally:
            server.shutdown()

"""Shared fixtures. Real storage protocols only: moto serves a real S3 HTTP endpoint on loopback."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

# --- S3 (moto in server mode) -------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on 127.0.0.1 (a free port), shared by the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials and region; no config files or instance metadata are consulted."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent/fnserve-tests/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/fnserve-tests/aws-credentials",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def s3_store_root(s3_server: str, s3_env: None) -> tuple[str, dict[str, Any]]:
    """A fresh, empty bucket: ``("s3://bucket/store", storage_options)``."""
    import fsspec

    options: dict[str, Any] = {
        "client_kwargs": {"endpoint_url": s3_server},
        "key": "testing",
        "secret": "testing",
    }
    bucket = f"fnserve-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", **options).mkdir(bucket)
    return f"s3://{bucket}/store", options


# --- the runtime's ASGI app, in-process ----------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Any) -> Any:
    """``with serve("double", "kinds", max_body_bytes=100) as client:`` the app over tests/support/fns/<names>
    (an absolute path names a function folder elsewhere).

    A context manager around ``starlette.testclient.TestClient`` (so lifespan runs: models load in
    the background), with the store at ``tmp_path/store``; it waits for /readyz unless
    ``wait_ready=False``. Extra keyword arguments are settings overrides.
    """
    import contextlib
    import time
    from pathlib import Path

    from starlette.testclient import TestClient

    from fnserve.runtime.app import create_app
    from fnserve.runtime.loader import discover
    from fnserve.runtime.service import Runtime
    from fnserve.runtime.settings import Settings

    fns = Path(__file__).parent / "support" / "fns"

    @contextlib.contextmanager
    def start(*names: str, wait_ready: bool = True, **overrides: Any) -> Iterator[TestClient]:
        base: dict[str, Any] = {"store": f"file://{tmp_path}/store", "cache": str(tmp_path / "cache")}
        base["reload_interval_s"] = 0.2
        settings = Settings.from_mapping(tmp_path, {}, {}, {**base, **overrides})
        runtime = Runtime(discover([fns / name for name in names]), settings)
        with TestClient(create_app(runtime)) as client:
            deadline = time.monotonic() + 10
            while wait_ready and client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the runtime did not become ready within 10 s"
                time.sleep(0.01)
            yield client

    return start


@pytest.fixture
def publish_weight(tmp_path: Any) -> Any:
    """``publish_weight("2.5")`` publishes a new version of the ``weighted`` test function's checkpoint
    (a folder holding weight.txt) into the store that ``serve`` uses; returns the version number."""
    import uuid

    from fnserve.runtime.store import CheckpointStore

    store = CheckpointStore(f"file://{tmp_path}/store", cache_dir=tmp_path / "publish-cache")

    def publish(weight: str) -> int:
        folder = tmp_path / f"weights-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        (folder / "weight.txt").write_text(weight)
        return store.publish("weighted", folder)

    return publish


# --- the Docker engine (tests marked `docker`) ----------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """The local Docker engine. Missing: skipped locally (with how to get it), a failure in CI."""
    import os

    from fnserve.docker_engine import DockerEngine, EngineUnavailable

    try:
        engine = DockerEngine.connect()
    except EngineUnavailable as exc:
        message = f"{exc}; or leave these tests out with -m 'not docker'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the Docker tests, but {message}", pytrace=False)
        pytest.skip(message)
    yield engine
    engine.close()


@pytest.fixture(autouse=True)
def _docker_marker_needs_engine(request: pytest.FixtureRequest) -> None:
    """Every test marked `docker` gets the engine (so it skips, or fails in CI, when there is none)."""
    if request.node.get_closest_marker("docker"):
        request.getfixturevalue("docker_engine")


# --- headless chromium (tests marked `browser`) ---------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium through Selenium. Missing: skipped locally (saying why), a failure in CI."""
    import os

    from tests.support.browser import BrowserUnavailable, start_browser

    try:
        driver = start_browser()
    except BrowserUnavailable as exc:
        message = f"{exc}; or leave these tests out with -m 'not browser'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the browser tests, but {message}", pytrace=False)
        pytest.skip(message)
    yield driver
    driver.quit()


# --- a PostgreSQL server (tests marked `postgres`) -------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test PostgreSQL server (scripts/ensure-postgres). Missing: skipped locally
    (saying why), a failure in CI."""
    import os

    from tests.support.postgres import PostgresUnavailable, server_url

    try:
        return server_url()
    except PostgresUnavailable as exc:
        message = f"{exc}; or leave these tests out with -m 'not postgres'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the PostgreSQL tests, but {message}", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def postgres(postgres_server: str) -> Iterator[Any]:
    """A fresh schema on the test server (a :class:`tests.support.postgres.Scratch`), dropped after."""
    from tests.support.postgres import scratch_schema

    with scratch_schema(postgres_server) as scratch:
        yield scratch


@pytest.fixture(autouse=True)
def _postgres_marker_needs_server(request: pytest.FixtureRequest) -> None:
    """Every test marked `postgres` gets the server (so it skips, or fails in CI, when there is none)."""
    if request.node.get_closest_marker("postgres"):
        request.getfixturevalue("postgres_server")


@pytest.fixture(scope="session")
def example_images(docker_engine: Any) -> dict[str, Any]:
    """The repository's example functions built once per session: ``{"recs": BuildResult, ...}``.

    The base image is made offline first if it is missing (scripts/ensure-docker makes it in CI).
    """
    from pathlib import Path

    from fnserve.images.builds import build_image, prepare_build
    from fnserve.project import ProjectSettings

    settings = ProjectSettings.from_mapping(Path(__file__).parent.parent, {}, {}, {})
    built = {}
    for name in ("recs", "tagger"):
        plan = prepare_build(settings, name, docker_engine)
        built[name] = build_image(plan, docker_engine)
    return built


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"boom")

    do_HEAD = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_http() -> Iterator[str]:
    """``host:port`` of an HTTP server on loopback that answers every request with a 500: a store
    that fails, for the tests that its errors show no credentials."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()

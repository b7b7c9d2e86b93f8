"""Payload capture: sampled requests and answers written as hive-partitioned Parquet, through
real fsspec protocols (file://, memory://, S3 on loopback), read back with pyarrow and duckdb;
a failing or slow sink costs requests nothing but dropped, counted rows."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from starlette.testclient import TestClient

from fnserve.runtime.app import create_app
from fnserve.runtime.capture import CaptureSettings, capture_settings
from fnserve.runtime.errors import ConfigError
from fnserve.runtime.loader import discover
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings
from tests.support.serving import start_serve, stop

FNS = Path(__file__).parent.parent / "support" / "fns"
ROWS = [{"price": 1.5, "country": "nl"}, {"price": 2.0, "country": "de"}]


def function_with(tmp_path: Path, monitor: str, name: str = "captured") -> Path:
    """A copy of a test function (``captured``) whose function.toml has this [monitor] body."""
    folder = tmp_path / "functions" / name
    shutil.copytree(FNS / name, folder)
    (folder / "function.toml").write_text(f"[monitor]\n{monitor}\n")
    return folder


@contextlib.contextmanager
def serving(
    tmp_path: Path,
    monitor: str,
    store: str | None = None,
    options: dict[str, Any] | None = None,
    name: str = "captured",
) -> Iterator[tuple[TestClient, Runtime]]:
    folder = function_with(tmp_path, monitor, name)
    config = {"store": {"options": options}} if options else {}
    flags = {"store": store or f"file://{tmp_path}/store", "cache": str(tmp_path / "cache")}
    runtime = Runtime(discover([folder]), Settings.from_mapping(tmp_path, config, {}, flags))
    with TestClient(create_app(runtime)) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield client, runtime


def metric(client: TestClient, line_start: str) -> float:
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(line_start)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def read_back(url: str, options: dict[str, Any] | None = None) -> pa.Table:
    filesystem, path = fsspec.core.url_to_fs(url, **(options or {}))
    return ds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive").to_table()


def wait_for(check: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- settings ------------------------------------------------------------------------------------


def test_settings_default_off_and_ignore_other_monitor_keys() -> None:
    assert capture_settings({"window_s": 60, "psi_threshold": 0.2}) == CaptureSettings()
    assert not CaptureSettings().enabled
    given = capture_settings({"capture_rate": 0.5, "capture_max_rows": 10, "capture_url": "memory://c"})
    assert given.rate == 0.5 and given.max_rows == 10 and given.url == "memory://c" and given.enabled


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("capture_rate", 1.5),
        ("capture_rate", "half"),
        ("capture_rate", True),
        ("capture_flush_rows", 0),
        ("capture_flush_s", -1),
        ("capture_max_rows", 2.5),
        ("capture_max_mb", 0),
        ("capture_url", ""),
        ("capture_ratio", 0.5),  # a typo is not silently off
    ],
)
def test_a_malformed_capture_key_stops_the_start_naming_it(tmp_path: Path, key: str, value: Any) -> None:
    shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
    folder = function_with(tmp_path, f"{key} = {shown}")
    settings = Settings.from_mapping(tmp_path, {}, {}, {"store": f"file://{tmp_path}/store"})
    with pytest.raises(ConfigError, match=key) as raised:
        Runtime(discover([folder]), settings)
    assert "function.toml" in str(raised.value)


def test_without_a_rate_nothing_is_captured(tmp_path: Path) -> None:
    with serving(tmp_path, "window_s = 60") as (client, runtime):
        assert client.post("/function/captured", json={"instances": ROWS}).status_code == 200
        assert not runtime.capture.enabled
    assert not (tmp_path / "store" / "_capture").exists()


# --- written and read back -----------------------------------------------------------------------


def test_file_store_reads_back_with_pyarrow_and_duckdb(tmp_path: Path) -> None:
    with serving(tmp_path, "capture_rate = 1\ncapture_flush_s = 0.05") as (client, _):
        posted = client.post("/function/captured", json={"instances": ROWS})
        got = client.get("/function/captured?price=3&country=fr")
        assert posted.status_code == got.status_code == 200
        wait_for(lambda: metric(client, 'fnserve_capture_rows_total{function="captured",version="0"}') == 3)
    root = tmp_path / "store" / "_capture"
    files = list(root.rglob("*.parquet"))
    assert files and all(
        f.parent.relative_to(root).parts[:2] == ("function=captured", "version=0") for f in files
    )
    assert all(f.parent.name.startswith("date=") for f in files)
    assert not list(root.rglob(".*"))  # no temporary file left behind
    table = read_back(root.as_uri()).sort_by("price")
    assert table.column_names[:4] == ["price", "country", "score", "loud"]
    rows = table.to_pylist()
    assert [(r["price"], r["country"], r["score"], r["loud"]) for r in rows] == [
        (1.5, "nl", 3.0, "NL"),
        (2.0, "de", 4.0, "DE"),
        (3.0, "fr", 6.0, "FR"),
    ]
    ids = [r["_request_id"] for r in rows]
    assert ids == [posted.headers["x-request-id"]] * 2 + [got.headers["x-request-id"]]
    assert all(0 < r["_latency_s"] < 5 and r["version"] == 0 and r["function"] == "captured" for r in rows)
    assert abs(rows[0]["_time"].timestamp() - time.time()) < 60

    duckdb = pytest.importorskip("duckdb")
    found = duckdb.sql(
        f"select country, score, version from read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
        "order by price"
    ).fetchall()
    assert found == [("nl", 3.0, 0), ("de", 4.0, 0), ("fr", 6.0, 0)]


def test_every_input_kind_is_a_column(tmp_path: Path) -> None:
    """Tensors and images as (nested) lists; outputs named like inputs as ``output_<name>``."""
    from tests.runtime.test_app import kinds_instance

    with serving(tmp_path, "capture_rate = 1\ncapture_flush_s = 0.05", name="kinds") as (client, _):
        instances = [kinds_instance(), kinds_instance(count=7, note="hello")]
        assert client.post("/function/kinds", json={"instances": instances}).status_code == 200
        wait_for(lambda: metric(client, "fnserve_capture_rows_total{") == 2)
    table = read_back((tmp_path / "store" / "_capture").as_uri()).sort_by("count")
    row = table.to_pylist()[1]
    assert row["count"] == 7 and row["output_count"] == 7.0 and row["note"] == "hello"
    assert row["vector"] == [1.0, 2.0, 3.0] and row["vector_sum"] == 6.0
    assert row["photo"][0][0] == [10, 20, 30] and len(row["photo"]) == 4
    assert row["season"] == "summer" and row["flag"] is True


def test_the_queue_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    from tests.runtime.test_app import kinds_instance

    monitor = "capture_rate = 1\ncapture_flush_s = 3600\ncapture_max_mb = 0.002"
    with serving(tmp_path, monitor, name="kinds") as (client, runtime):
        channel = runtime.capture._channels["kinds"]
        for _ in range(40):
            assert client.post("/function/kinds", json=kinds_instance()).status_code == 200
            assert channel.queued_bytes <= 2000
        assert 0 < channel.queued < 40
        full = 'fnserve_capture_dropped_rows_total{function="kinds",reason="queue_full"}'
        assert metric(client, full) == 40 - channel.queued


def test_memory_store(tmp_path: Path) -> None:
    store = f"memory://capture-{uuid.uuid4().hex[:8]}/store"
    with serving(tmp_path, "capture_rate = 1\ncapture_flush_s = 0.05", store=store) as (client, _):
        assert client.post("/function/captured", json={"instances": ROWS}).status_code == 200
        wait_for(lambda: metric(client, "fnserve_capture_rows_total{") == 2)
    assert sorted(read_back(f"{store}/_capture").column("loud").to_pylist()) == ["DE", "NL"]


def test_s3_store_on_loopback(tmp_path: Path, s3_store_root: tuple[str, dict[str, Any]]) -> None:
    store, options = s3_store_root
    with serving(tmp_path, "capture_rate = 1\ncapture_flush_s = 0.05", store, options) as (client, _):
        assert client.post("/function/captured", json={"instances": ROWS * 5}).status_code == 200
        wait_for(lambda: metric(client, "fnserve_capture_rows_total{") == 10)
    table = read_back(f"{store}/_capture", options)
    assert table.num_rows == 10 and set(table.column("country").to_pylist()) == {"nl", "de"}


def test_sampling_follows_the_rate(tmp_path: Path) -> None:
    with serving(tmp_path, "capture_rate = 0.5\ncapture_flush_s = 0.05") as (client, _):
        for _ in range(20):  # batches: sampled by a mask
            instances = [{"price": float(i), "country": "nl"} for i in range(100)]
            assert client.post("/function/captured", json={"instances": instances}).status_code == 200
        for i in range(400):  # single rows: one draw each
            assert client.get(f"/function/captured?price={i}&country=de").status_code == 200
        time.sleep(0.3)
    table = read_back((tmp_path / "store" / "_capture").as_uri())
    countries = table.column("country").to_pylist()
    batched, single = countries.count("nl"), countries.count("de")
    assert 850 <= batched <= 1150  # 2000 rows at 0.5: sd 22
    assert 120 <= single <= 280  # 400 at 0.5: sd 10


def test_real_server_flushes_what_is_queued_on_sigterm(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    folder = function_with(project, "capture_rate = 1\ncapture_flush_s = 3600\ncapture_flush_rows = 100000")
    served = start_serve(project, folder)
    try:
        import httpx

        for i in range(30):
            answer = httpx.post(f"{served.url}/function/captured", json={"price": i, "country": "se"})
            assert answer.status_code == 200
        assert not list((project / "store").rglob("*.parquet"))  # nothing due yet: queued in memory
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(30)
    finally:
        stop(served)
    table = read_back((project / "store" / "_capture").as_uri())
    assert sorted(table.column("price").to_pylist()) == [float(i) for i in range(30)]


# --- a sink that fails or is slow ----------------------------------------------------------------


def test_a_failing_sink_is_counted_and_logged_once_never_a_failed_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the capture folder should be")
    monitor = f'capture_rate = 1\ncapture_flush_s = 0.02\ncapture_url = "{blocker.as_uri()}/capture"'
    caplog.set_level(logging.INFO, logger="fnserve.capture")
    with serving(tmp_path, monitor) as (client, _):
        for _ in range(6):  # several flushes, one outage
            assert client.post("/function/captured", json={"instances": ROWS}).status_code == 200
            time.sleep(0.06)
        dropped = 'fnserve_capture_dropped_rows_total{function="captured",reason="write_failed"}'
        wait_for(lambda: metric(client, dropped) == 12)
        failures = [
            r for r in caplog.records if "capture to" in r.getMessage() and r.levelno == logging.ERROR
        ]
        assert len(failures) == 1 and "dropping captured rows" in failures[0].getMessage()

        blocker.unlink()  # the sink comes back
        assert client.post("/function/captured", json={"instances": ROWS}).status_code == 200
        wait_for(lambda: metric(client, "fnserve_capture_rows_total{") == 2)
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert read_back(f"{blocker.as_uri()}/capture").num_rows == 2


class SlowFileSystem(MemoryFileSystem):
    """memory:// whose every write takes a second: a sink far behind the traffic."""

    protocol = "slowmem"

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode:
            time.sleep(1.0)
        return super()._open(path, mode, **kwargs)


def test_a_slow_sink_neither_slows_requests_nor_grows_the_queue(tmp_path: Path) -> None:
    fsspec.register_implementation("slowmem", SlowFileSystem, clobber=True)
    monitor = (
        'capture_rate = 1\ncapture_flush_rows = 10\ncapture_max_rows = 50\ncapture_url = "slowmem://cap"'
    )
    with serving(tmp_path, monitor) as (client, runtime):
        channel = runtime.capture._channels["captured"]
        slowest, started = 0.0, time.perf_counter()
        for i in range(300):
            began = time.perf_counter()
            assert client.get(f"/function/captured?price={i}&country=fi").status_code == 200
            slowest = max(slowest, time.perf_counter() - began)
            assert channel.queued <= 50
        took = time.perf_counter() - started
        assert slowest < 0.5 and took < 5  # a write takes 1 s: requests never waited for one
    registry = runtime.metrics.registry  # stopped: what was queued is written now
    full = registry.get_sample_value(
        "fnserve_capture_dropped_rows_total", {"function": "captured", "reason": "queue_full"}
    )
    written = registry.get_sample_value(
        "fnserve_capture_rows_total", {"function": "captured", "version": "0"}
    )
    assert full is not None and written is not None
    assert full > 100 and full + written == 300

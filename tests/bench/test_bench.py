"""`fn bench`: plan, inputs, stats, table and plot as values; the load generator's HTTP/1.1
connection against a raw loopback server; the whole command against a real `fn serve`."""

from __future__ import annotations

import asyncio
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from PIL import Image
from rich.console import Console

from fnserve.bench import BenchError, BenchPlan, InputSpec, StepResult, parse_levels, run
from fnserve.bench.http1 import Connection, encode_request
from fnserve.bench.plot import save_plot
from fnserve.bench.report import results_table
from fnserve.cli.main import cli
from fnserve.client import Client, ClientError
from fnserve.client.core import Call
from tests.support.serving import Served, start_serve, stop

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start_serve(tmp_path_factory.mktemp("bench"), FNS / "double", FNS / "kinds")
    yield s
    stop(s)


def fn_bench(*args: str, cwd: Path) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, ["bench", *args], env={"COLUMNS": "120"}, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


# --- plan, inputs, stats, report -----------------------------------------------------------------


def test_plan_is_checked() -> None:
    assert parse_levels("1,4, 16", "--concurrency") == (1, 4, 16)
    for bad in ("", "1,x", "0,4", "-1"):
        with pytest.raises(BenchError, match="--batch"):
            parse_levels(bad, "--batch")
    with pytest.raises(BenchError, match="duration"):
        BenchPlan("double", duration_s=0)
    with pytest.raises(BenchError, match="requests"):
        BenchPlan("double", requests=0)
    plan = BenchPlan("double", concurrency=(1, 2), batch=(1, 8))
    assert [(s.concurrency, s.batch) for s in plan.steps()] == [(1, 1), (2, 1), (1, 8), (2, 8)]


def test_generated_inputs_fit_the_schema_and_the_server_accepts_them(served: Served) -> None:
    with Client(served.url) as client:
        schema = next(f for f in client.functions() if f["name"] == "kinds")["inputs"]
        instances = InputSpec(seed=7).instances(schema, 20)
        assert client.predict_batch("kinds", instances)  # the runtime's own validation agrees
    assert all(0 <= i["count"] <= 100 and i["season"] in ("winter", "summer") for i in instances)
    assert all(len(i["vector"]) == 3 and isinstance(i["flag"], bool) for i in instances)
    photo = Image.open(io.BytesIO(instances[0]["photo"]))
    assert photo.format == "PNG" and photo.size == (4, 4)
    assert InputSpec(seed=7).instances(schema, 3) == instances[:3]  # reproducible


def test_given_inputs_and_overrides(tmp_path: Path) -> None:
    schema = [
        {"name": "x", "type": "float", "required": True},
        {"name": "n", "type": "int", "required": True},
        {"name": "on", "type": "bool", "required": False, "default": False},
        {"name": "v", "type": "tensor", "required": True, "dtype": "float32", "shape": [2]},
        {"name": "photo", "type": "image", "required": True, "dtype": "uint8", "shape": [None, None, 3]},
    ]
    data = tmp_path / "rows.json"
    data.write_bytes(orjson.dumps({"instances": [{"x": 1.0}, {"x": 2.0}]}))
    image = tmp_path / "p.png"
    image.write_bytes(b"png bytes")
    pairs = ["n=3", "on=yes", "v=1,2", f"photo=@{image}"]
    spec = InputSpec.from_options(data, pairs)
    assert spec.instances(schema, 3) == [
        {"x": x, "n": 3, "on": True, "v": [1.0, 2.0], "photo": b"png bytes"} for x in (1.0, 2.0, 1.0)
    ]
    with pytest.raises(BenchError, match="-d y: the function has no such input; it takes x, n"):
        InputSpec(overrides={"y": "1"}).instances(schema, 1)
    with pytest.raises(BenchError, match="-d n=many: not a valid int"):
        InputSpec(overrides={"n": "many"}).instances(schema, 1)
    with pytest.raises(BenchError, match="KEY=VALUE"):
        InputSpec.from_options(None, ["x"])
    data.write_text("[1, 2]")
    with pytest.raises(BenchError, match="expected an object"):
        InputSpec.from_options(data, [])


def test_stats_are_exact_percentiles_and_wall_time_rates() -> None:
    latencies = list(np.random.default_rng(0).exponential(0.01, 1001))
    result = StepResult(8, 32, wall_s=4.0, latencies_s=latencies, errors=3, first_error="429: full")
    assert result.requests == 1001 and result.requests_per_s == 1001 / 4.0
    assert result.predictions_per_s == 1001 / 4.0 * 32
    for q, value in ((50, result.p50_ms), (90, result.p90_ms), (99, result.p99_ms)):
        assert value == pytest.approx(np.percentile(latencies, q) * 1000)
    none = StepResult(64, 1, wall_s=1.0, latencies_s=[], errors=10)
    assert none.requests_per_s == 0 and math.isnan(none.p99_ms)


def test_table_and_plot(tmp_path: Path) -> None:
    plan = BenchPlan("double", "http://127.0.0.1:1", concurrency=(1, 4), batch=(1, 32))
    results = [
        StepResult(1, 1, 1.0, [0.001] * 900),
        StepResult(4, 1, 1.0, [0.002] * 1800),
        StepResult(1, 32, 1.0, [0.004] * 250),
        StepResult(4, 32, 1.0, [], errors=7, first_error="429: queue is full"),
    ]
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(results_table(plan, results))
    rows = [line.split() for line in console.export_text().splitlines()]
    header = ["concurrency", "batch", "requests", "req/s", "pred/s", "p50", "ms", "p90", "ms", "p99", "ms"]
    assert rows[1][:11] == header
    assert ["1", "32", "250", "250", "8,000", "4.00", "4.00", "4.00", "0"] in rows
    assert ["4", "32", "0", "0", "0", "-", "-", "-", "7"] in rows
    path = save_plot(results, tmp_path / "out" / "plot.png", "fn bench double")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 400


# --- the load generator's connection --------------------------------------------------------------


def test_connection_reads_chunked_answers_and_reconnects_when_closed() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nContent-Length: 16\r\nConnection: close\r\n\r\n" + b'{"error":"busy"}',
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ]
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while answers and await reader.readuntil(b"\r\n\r\n"):
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if b"close" in answer:
                break
        writer.close()

    async def scenario() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        connection = Connection(url, timeout_s=5)
        request = encode_request(url, Call("GET", "/function/double", {"x": "1"}))
        try:
            return [await connection.request(request) for _ in range(3)]
        finally:
            connection.close()
            server.close()

    assert asyncio.run(scenario()) == [(200, b"hello world"), (503, b'{"error":"busy"}'), (200, b"ok")]
    assert connections == 2


def test_connection_to_nothing_is_a_client_error() -> None:
    async def scenario() -> None:
        await Connection("http://127.0.0.1:9", 1).request(b"GET / HTTP/1.1\r\n\r\n")

    with pytest.raises(ClientError, match=r"cannot reach http://127\.0\.0\.1:9") as failed:
        asyncio.run(scenario())
    assert failed.value.status == 0


# --- end to end against `fn serve` ---------------------------------------------------------------


def test_fn_bench_double_prints_the_table_and_writes_the_plot(served: Served, tmp_path: Path) -> None:
    args = ["double", "--url", served.url, "-c", "1,2", "-b", "1,8", "--duration", "0.3"]
    code, output = fn_bench(*args, "--plot", str(tmp_path / "double.png"), cwd=tmp_path)
    assert code == 0, output
    rows = [line.split() for line in output.splitlines()]
    measured = [row for row in rows if len(row) == 9 and row[0].isdigit()]
    assert [(row[0], row[1]) for row in measured] == [("1", "1"), ("2", "1"), ("1", "8"), ("2", "8")]
    for row in measured:
        requests, per_s, predictions = (int(v.replace(",", "")) for v in row[2:5])
        assert requests > 0 and predictions == pytest.approx(per_s * int(row[1]), rel=0.01, abs=8)
        assert row[8] == "0"  # no errors
    with Image.open(tmp_path / "double.png") as image:
        assert image.format == "PNG"

    code, output = fn_bench(
        "double", "--url", served.url, "-c", "1", "-b", "1", "--requests", "20", cwd=tmp_path
    )
    assert code == 0 and (tmp_path / "bench-double.png").exists()
    assert ["1", "1", "20"] in [line.split()[:3] for line in output.splitlines()]


def test_generated_inputs_for_every_kind_json_and_arrow(served: Served) -> None:
    for arrow in (False, True):
        plan = BenchPlan("kinds", served.url, (2,), (1, 4), duration_s=0.2, warmup_s=0, arrow=arrow)
        results = run(plan, InputSpec())
        assert [(r.batch, r.errors) for r in results] == [(1, 0), (4, 0)]
        assert all(r.requests > 0 for r in results)


def test_fn_bench_mistakes_are_one_line_errors(served: Served, tmp_path: Path) -> None:
    code, output = fn_bench("nope", "--url", served.url, cwd=tmp_path)
    assert code == 1 and "no function named 'nope'" in output and "double, kinds" in output
    code, output = fn_bench("kinds", "--url", served.url, "-d", "count=1000", cwd=tmp_path)
    assert code == 1 and "422" in output and "count" in output and "give inputs with --data or -d" in output
    code, output = fn_bench("double", "--url", served.url, "-c", "1,zero", cwd=tmp_path)
    assert code == 1 and "--concurrency" in output
    code, output = fn_bench("double", "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert code == 1 and "cannot reach" in output and "Traceback" not in output

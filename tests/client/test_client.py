"""fnserve.Client and AsyncClient: against a real `fn serve`, and against a scripted loopback server
for what `fn serve` will not do on demand (a 503 then a 200, an HTML error page, silence)."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import orjson
import pytest
from PIL import Image

import fnserve
from fnserve.client import AsyncClient, Client, ClientError, core
from tests.support.scripted import Answer, Scripted
from tests.support.serving import Served, start_serve, stop

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str, str, bytes], Answer]], Scripted]]:
    servers: list[Scripted] = []

    def start(script: Callable[[str, str, bytes], Answer]) -> Scripted:
        servers.append(Scripted(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def doubling(method: str, path: str, body: bytes) -> Answer:
    """What `fn serve` answers for `double`: a GET ?x=..., or POSTed instances."""
    if method == "GET":
        rows = [{"x": float(v)} for k, v in parse_qsl(urlsplit(path).query) if k == "x"]
    else:
        payload = orjson.loads(body)
        rows = payload.get("instances", [payload])
    return 200, {}, orjson.dumps({"predictions": [r["x"] * 2 for r in rows]})


def overloaded_then_ok(refusals: int, retry_after: str | None) -> Callable[[str, str, bytes], Answer]:
    count = 0

    def script(method: str, path: str, body: bytes) -> Answer:
        nonlocal count
        count += 1
        if count <= refusals:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return 503, headers, b'{"error": "model is loading"}'
        return 200, {}, b'{"predictions": [42.0]}'

    return script


# --- retries --------------------------------------------------------------------------------------


def test_retries_honour_retry_after(scripted) -> None:  # type: ignore[no-untyped-def]
    server = scripted(overloaded_then_ok(2, "0.3"))
    with Client(server.url) as client:
        assert client.predict("double", x=21) == 42.0
    times = [t for t, *_ in server.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.29 and times[2] - times[1] >= 0.29


def test_async_retries_back_off_without_retry_after(scripted) -> None:  # type: ignore[no-untyped-def]
    server = scripted(overloaded_then_ok(2, None))

    async def call() -> Any:
        async with AsyncClient(server.url) as client:
            return await client.predict("double", x=21)

    assert asyncio.run(call()) == 42.0
    times = [t for t, *_ in server.requests]
    assert len(times) == 3 and times[1] - times[0] >= 0.09 and times[2] - times[1] >= 0.19  # 0.1 s, 0.2 s


def test_retries_are_bounded_in_count_and_total_wait(scripted) -> None:  # type: ignore[no-untyped-def]
    server = scripted(overloaded_then_ok(100, "0"))
    with Client(server.url, retries=2) as client, pytest.raises(ClientError) as refused:
        client.predict("double", x=1)
    assert refused.value.status == 503 and "model is loading (refused 3 tries)" in str(refused.value)
    assert len(server.requests) == 3

    slow = scripted(overloaded_then_ok(100, "60"))
    started = time.monotonic()
    with Client(slow.url, max_retry_wait_s=5) as client, pytest.raises(ClientError):
        client.predict("double", x=1)  # waiting 60 s would exceed the budget: give up at once
    assert time.monotonic() - started < 2 and len(slow.requests) == 1


def test_retry_after_as_http_date() -> None:
    policy = core.RetryPolicy()
    assert policy.wait_s(429, "Thu, 01 Jan 2099 00:00:00 GMT", 0, 0.0) is None  # far beyond the budget
    assert policy.wait_s(400, "1", 0, 0.0) is None  # only 429/503 are retried


# --- errors ---------------------------------------------------------------------------------------


def test_non_json_error_bodies_and_answers(scripted) -> None:  # type: ignore[no-untyped-def]
    page = b"<html><body><h1>502 Bad Gateway</h1>\n  nginx</body></html>"
    proxy = scripted(lambda *_: (502, {"Content-Type": "text/html"}, page))
    with Client(proxy.url) as client, pytest.raises(ClientError) as failed:
        client.predict("double", x=1)
    assert failed.value.status == 502
    assert str(failed.value) == "502: <html><body><h1>502 Bad Gateway</h1> nginx</body></html>"

    odd = scripted(lambda *_: (200, {}, b"hello"))
    with Client(odd.url) as client, pytest.raises(ClientError, match="not JSON"):
        client.predict("double", x=1)
    wrong = scripted(lambda *_: (200, {}, b'{"predictions": [1, 2]}'))
    with Client(wrong.url) as client, pytest.raises(ClientError, match="asked for 1 predictions"):
        client.predict("double", x=1)


def test_unreachable_and_timeouts_are_status_0(scripted) -> None:  # type: ignore[no-untyped-def]
    with Client("http://127.0.0.1:9") as client, pytest.raises(ClientError) as refused:
        client.predict("double", x=1)
    assert refused.value.status == 0 and "cannot reach http://127.0.0.1:9" in str(refused.value)

    def silent(*_: Any) -> Answer:
        time.sleep(1.0)
        return 200, {}, b'{"predictions": [0]}'

    server = scripted(silent)
    with Client(server.url, timeout_s=0.2) as client, pytest.raises(ClientError) as late:
        client.predict("double", x=1)
    assert late.value.status == 0 and "within 0.2 s" in str(late.value)


# --- chunking and order -------------------------------------------------------------------------


def test_predict_many_chunks_in_parallel_and_keeps_order(scripted) -> None:  # type: ignore[no-untyped-def]
    def slow_doubling(method: str, path: str, body: bytes) -> Answer:
        time.sleep(0.05 if b'"x":0.0' in body else 0.0)  # the first chunk answers last
        return doubling(method, path, body)

    server = scripted(slow_doubling)
    rows = [{"x": float(i)} for i in range(103)]
    with Client(server.url, concurrency=4) as client:
        assert client.predict_many("double", rows, batch_size=10) == [2.0 * i for i in range(103)]
    sizes = sorted(len(orjson.loads(body)["instances"]) for *_, body in server.requests)
    assert sizes == [3] + [10] * 10


def test_async_predict_many_bounds_concurrency(scripted) -> None:  # type: ignore[no-untyped-def]
    in_flight, peak = 0, 0
    lock = threading.Lock()

    def counting(method: str, path: str, body: bytes) -> Answer:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return doubling(method, path, body)

    server = scripted(counting)

    async def call() -> list[Any]:
        async with AsyncClient(server.url, concurrency=16) as client:
            return await client.predict_many("double", [{"x": i} for i in range(40)], concurrency=3)

    assert asyncio.run(call()) == [2.0 * i for i in range(40)]
    assert len(server.requests) == 40 and peak == 3


def test_first_error_is_raised_and_stops_the_rest(scripted) -> None:  # type: ignore[no-untyped-def]
    def failing(method: str, path: str, body: bytes) -> Answer:
        if path.endswith("x=5"):
            return 422, {}, b'{"error": "x: too odd"}'
        time.sleep(0.01)
        return doubling(method, path, body)

    server = scripted(failing)
    with Client(server.url, concurrency=2) as client, pytest.raises(ClientError, match="422: x: too odd"):
        client.predict_many("double", [{"x": i} for i in range(200)])
    assert len(server.requests) < 200


@pytest.mark.parametrize("module", ["core", "arrow", "sync", "aio"])
def test_docstring_examples(module: str) -> None:
    # tests/test_doctests.py skips names containing ".cli", which fnserve.client does.
    found = doctest.testmod(
        importlib.import_module(f"fnserve.client.{module}"),
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert found.failed == 0


def test_request_building() -> None:
    assert core.single_call("recs@3", {"a": 1, "b": True, "v": np.arange(3)}).params == {
        "a": "1",
        "b": "true",
        "v": "0,1,2",
    }
    posted = core.single_call("tagger", {"photo": b"\x89PNG", "t": [[1, 2]]})
    assert posted.method == "POST" and orjson.loads(posted.content or b"") == {
        "photo": {"b64": "iVBORw=="},
        "t": [[1, 2]],
    }
    assert [list(c) for c in core.chunks([], 3)] == []
    with pytest.raises(ValueError):
        list(core.chunks([1], 0))


# --- against a real `fn serve` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start_serve(tmp_path_factory.mktemp("client"), FNS / "double", FNS / "kinds")
    yield s
    stop(s)


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_sync_client_against_fn_serve(served: Served) -> None:
    scalars = {"count": 3, "ratio": 0.5, "flag": True, "season": "summer", "vector": [1, 2, 3]}
    with fnserve.Client(served.url) as client:
        assert client.predict("double", x=21) == 42.0
        assert client.predict_batch("double", [{"x": 1}, {"x": 2}]) == [2.0, 4.0]
        many = client.predict_many("double", [{"x": i} for i in range(50)], batch_size=7, concurrency=3)
        assert many == [2.0 * i for i in range(50)]
        from_bytes = client.predict_bytes("kinds", png((10, 20, 30)), "image/png", **scalars)
        as_json = client.predict("kinds", photo=png((30, 30, 30)), **scalars)  # bytes: POST, base64
        assert from_bytes["photo_mean"] == 20.0 and as_json["photo_mean"] == 30.0
        assert {f["name"] for f in client.functions()} == {"double", "kinds"}
        with pytest.raises(ClientError) as bad:
            client.predict("double", x="many")
        assert bad.value.status == 422 and "x" in str(bad.value)
        with pytest.raises(ClientError) as unknown:
            client.predict("nope", x=1)
        assert unknown.value.status == 404


def test_async_client_against_fn_serve(served: Served) -> None:
    async def calls() -> tuple[Any, list[Any], list[Any]]:
        async with fnserve.AsyncClient(served.url, concurrency=8) as client:
            one = await client.predict("double", x=2)
            many = await client.predict_many("double", [{"x": i} for i in range(300)], batch_size=32)
            singles = await client.predict_many("double", [{"x": i} for i in range(30)])
            return one, many, singles

    one, many, singles = asyncio.run(calls())
    assert one == 4.0 and many == [2.0 * i for i in range(300)] and singles == [2.0 * i for i in range(30)]


def test_arrow_batches_against_fn_serve(served: Served) -> None:
    with Client(served.url) as client:
        table = client.predict_arrow("double", {"x": np.arange(1000.0)}, batch_size=128, concurrency=4)
    assert table.column_names == ["prediction"]
    assert table.column("prediction").to_pylist() == [2.0 * i for i in range(1000)]

    async def one_request() -> Any:
        async with AsyncClient(served.url) as client:
            return await client.predict_arrow("double", {"x": [1.5, 2.5]})

    assert asyncio.run(one_request()).column("prediction").to_pylist() == [3.0, 5.0]


def test_readme_client_example_runs_as_shown(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    fare = next(b for b in blocks if b.startswith("# functions/fare/predict.py\nfrom typing"))
    example = next(b for b in blocks if b.startswith("# call fare from Python"))
    (tmp_path / "functions" / "fare").mkdir(parents=True)
    (tmp_path / "functions" / "fare" / "predict.py").write_text(fare)
    served = start_serve(tmp_path, tmp_path / "functions" / "fare")
    try:
        names: dict[str, Any] = {}
        exec(example.replace("http://127.0.0.1:8080", served.url), names)
    finally:
        stop(served)
    assert names["one"] == 335.0 and names["two"] == [335.0, 26.0]
    assert names["fares"] == [20 + d * 0.12 for d in range(10_000)]
    assert names["table"].column("prediction").to_pylist() == [335.0, 26.0]

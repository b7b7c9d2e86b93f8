"""``Client.submit`` / ``status`` / ``result`` and their ``AsyncClient`` twins, against a real `fn serve`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fnserve import AsyncClient, Client
from fnserve.client import ClientError
from tests.support.gateways import FNS
from tests.support.serving import Served, start_serve, stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    project = tmp_path_factory.mktemp("async-client")
    server = start_serve(project, FNS / "double", extra_env={"FNSERVE_ASYNC_SCAN_INTERVAL_S": "0.2"})
    yield server
    stop(server)


def test_the_client_submits_and_waits(served: Served) -> None:
    with Client(served.url) as client:
        one = client.submit("double", {"x": 2})
        batch = client.submit("double", [{"x": 1}, {"x": 3}])
        bad = client.submit("double", {"x": "two"})
        assert client.result(one, timeout_s=10) == [4.0]
        assert client.result(batch, timeout_s=10) == [2.0, 6.0]
        with pytest.raises(ClientError) as failed:
            client.result(bad, timeout_s=10)
        status = client.status(one)
        with pytest.raises(ClientError) as unknown:
            client.status("double.0123456789abcdef0123456789abcdef")
    assert failed.value.status == 422 and "x:" in str(failed.value)
    assert status["status"] == "done" and status["result"] == {"predictions": [4.0]}
    assert unknown.value.status == 404


def test_the_async_client_does_the_same(served: Served) -> None:
    async def main() -> tuple[list[float], str]:
        async with AsyncClient(served.url) as client:
            call_id = await client.submit("double", [{"x": 5}])
            found = await client.result(call_id, timeout_s=10)
            return found, (await client.status(call_id))["status"]

    assert asyncio.run(main()) == ([10.0], "done")


def test_a_server_that_answers_at_once_is_said_so(tmp_path: Path) -> None:
    server = start_serve(tmp_path, FNS / "double", extra_env={"FNSERVE_ASYNC_MAX_QUEUED": "0"})
    try:
        with Client(server.url) as client, pytest.raises(ClientError) as answered:
            client.submit("double", {"x": 2})
    finally:
        stop(server)
    assert "the call was answered at once" in str(answered.value) and answered.value.status == 200

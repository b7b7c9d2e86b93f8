"""Answers name the version that computed them: a request queued while a new version is swapped in
is computed by the new model, and every protocol labels it so (``X-Model-Version``, the ETag, v2's
``model_version``, the metrics), in process and over a real server.

The ``stamped`` test function's model is its checkpoint's version number and every prediction
carries it, so each answer says itself which model computed it. A long first call (``hold``)
keeps the model busy while requests queue, a new version is published and swapped in, and more
requests queue; they are then all computed by one call of the new model.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from fnserve.runtime.errors import VersionChanged
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.store import CheckpointStore
from tests.support.serving import start_serve, stop

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"
HOLD_S = 2.0  # the busy first call: long enough for a swap (reload interval 0.2 s) and the queueing
ARROW = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True)
class Answer:
    what: str
    status: int
    labels: frozenset[int]  # the versions the answer is labelled with: header, ETag, model_version
    computed: frozenset[int]  # the versions of the model, from the predictions themselves
    calls: frozenset[int]  # the model calls that computed it
    rows: int
    error: str | None = None


def publisher(store_url: str, scratch: Path) -> Callable[[int], None]:
    """``publish(v)`` publishes the stamped checkpoint whose model is ``v`` as version ``v``."""
    store = CheckpointStore(store_url, cache_dir=scratch / "publish-cache")

    def publish(version: int) -> None:
        folder = scratch / f"stamped-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        (folder / "version.txt").write_text(str(version))
        assert store.publish("stamped", folder) == version

    return publish


def arrow_body(rows: int) -> bytes:
    sink = pa.BufferOutputStream()
    table = pa.table({"x": [float(i) for i in range(rows)]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def v2_body(rows: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [rows], "datatype": "FP64", "data": [1.0] * rows}]}


def send(client: Any, what: str, pin: int | None) -> Any:
    """One request of kind ``what`` (pinned to ``pin``)."""
    at, versioned = (f"@{pin}", f"/versions/{pin}") if pin else ("", "")
    if what == "native GET":
        return client.get(f"/function/stamped{at}", params={"x": 1})
    if what == "native JSON":
        return client.post(f"/function/stamped{at}", json={"instances": [{"x": 1}, {"x": 2}]})
    if what == "native Arrow":
        headers = {"content-type": ARROW, "accept": ARROW}
        return client.post(f"/function/stamped{at}", content=arrow_body(3), headers=headers)
    if what == "v2":
        return client.post(f"/v2/models/stamped{versioned}/infer", json=v2_body(2))
    body = {"instances": [{"x": 1}] * 2} if what == "TF rows" else {"inputs": {"x": [1, 2]}}
    return client.post(f"/v1/models/stamped{versioned}:predict", json=body)


def predictions(what: str, response: Any) -> list[dict[str, Any]]:
    """The rows of a successful answer, whatever its protocol."""
    if what == "native Arrow":
        return list(pa.ipc.open_stream(response.content).read_all().to_pylist())
    body = response.json()
    if what == "v2":
        columns = {o["name"]: o["data"] for o in body["outputs"]}
    elif what == "TF columns":
        columns = body["outputs"]
    else:
        return list(body["predictions"])
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def ask(client: Any, what: str, pin: int | None = None) -> Answer:
    """One request, read back as an :class:`Answer`."""
    response = send(client, what, pin)
    what += f"@{pin}" if pin else ""
    if response.status_code != 200:
        return Answer(what, response.status_code, frozenset(), frozenset(), frozenset(), 0, response.text)
    labels = {int(response.headers["x-model-version"])}
    if etag := response.headers.get("etag"):
        labels.add(int(etag.removeprefix('W/"').split("-")[0]))
    if what.startswith("v2"):
        labels.add(int(response.json()["model_version"]))
    rows = predictions(what.partition("@")[0], response)
    return Answer(
        what,
        response.status_code,
        frozenset(labels),
        frozenset(int(row["version"]) for row in rows),
        frozenset(int(row["call"]) for row in rows),
        len(rows),
    )


ROWS = {"native GET": 1, "native JSON": 2, "native Arrow": 3, "v2": 2, "TF rows": 2, "TF columns": 2}
PINNABLE = ("native JSON", "v2", "TF rows")
WAVE = [*((kind, None) for kind in ROWS), *((kind, 1) for kind in PINNABLE)]  # the requests of a wave
WAVE_ROWS = sum(ROWS.values()) + sum(ROWS[kind] for kind in PINNABLE)


def metric(client: Any, name: str, labels: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def until(probe: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def served_version(client: Any) -> int | None:
    (info,) = client.get("/functions").json()["functions"]
    return info["version"]


def swap_under_load(client: Any, publish: Callable[[int], None]) -> None:
    """The scenario, against a server already serving version 1 of ``stamped``."""

    def queued() -> float:
        return metric(client, "fnserve_queued_instances", 'function="stamped"')

    with ThreadPoolExecutor(max_workers=32) as pool:
        hold = pool.submit(
            lambda: client.post("/function/stamped", json={"instances": [{"x": 0, "hold": HOLD_S}]})
        )
        until(lambda: metric(client, "fnserve_batch_size_count", 'function="stamped"') == 1, "the hold call")

        def wave(requests: list[tuple[str, int | None]]) -> list[Future[Answer]]:
            return [pool.submit(ask, client, what, pin) for what, pin in requests]

        before = wave(WAVE)
        until(lambda: queued() == WAVE_ROWS, "the requests before the swap to queue")
        publish(2)
        until(lambda: served_version(client) == 2, "version 2 to be swapped in")
        after = wave([(kind, pin and 2) for kind, pin in WAVE])
        until(lambda: queued() == 2 * WAVE_ROWS, "the requests after the swap to queue")
        assert not hold.done(), f"the swap took longer than the {HOLD_S}s hold: raise HOLD_S"
        held = hold.result()
        answers_before = [f.result() for f in before]
        answers_after = [f.result() for f in after]

    assert held.status_code == 200 and held.headers["x-model-version"] == "1"
    assert held.json()["predictions"][0]["version"] == 1
    refused = [a for a in answers_before if a.what.endswith("@1")]
    answered = [a for a in answers_before + answers_after if a not in refused]
    for answer in answered:  # labelled with the model that computed it: the new one
        assert answer.status == 200, answer
        assert answer.labels == answer.computed == {2}, answer
    calls = {call for answer in answered for call in answer.calls}
    assert len(calls) == 1, f"one model call was expected to answer before and after the swap: {calls}"
    for answer in refused:  # pinned to 1, computed by 2: refused, never labelled 1
        assert answer.status == 404, answer
        assert "version '1' of 'stamped' was replaced by version 2" in (answer.error or ""), answer
    by_version = {
        v: metric(client, "fnserve_instances_total", f'function="stamped",version="{v}"') for v in (1, 2)
    }
    assert by_version == {1: 1.0, 2: float(sum(a.rows for a in answered))}


@pytest.fixture
def in_process(serve: Any, tmp_path: Path) -> Iterator[tuple[Any, Callable[[int], None]]]:
    publish = publisher(f"file://{tmp_path}/store", tmp_path)
    publish(1)
    with serve(str(FNS / "stamped")) as client:
        yield client, publish


def test_answers_queued_across_a_swap_name_the_model_that_computed_them(
    in_process: tuple[Any, Callable[[int], None]],
) -> None:
    swap_under_load(*in_process)


@pytest.mark.slow
def test_answers_queued_across_a_swap_name_the_model_that_computed_them_over_a_real_server(
    tmp_path: Path,
) -> None:
    publish = publisher(f"file://{tmp_path}/store", tmp_path)
    publish(1)
    served = start_serve(tmp_path, FNS / "stamped", extra_env={"FNSERVE_RELOAD_INTERVAL_S": "0.2"})
    try:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            swap_under_load(client, publish)
    finally:
        stop(served)


def test_a_request_whose_parts_straddle_a_swap_is_answered_by_one_version(
    in_process: tuple[Any, Callable[[int], None]],
) -> None:
    """100 rows are two model calls (of 64 and 36): the swap lands between them. The answer is not
    half one model and half the other, labelled with either: it is computed again, by the new one.
    The same request pinned to the old version is refused."""
    client, publish = in_process
    rows = [{"x": i, "hold": HOLD_S if i == 0 else 0.0} for i in range(100)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        big = pool.submit(client.post, "/function/stamped", json={"instances": rows})
        until(lambda: metric(client, "fnserve_batch_size_count", 'function="stamped"') == 1, "the first part")
        pinned = pool.submit(client.post, "/function/stamped@1", json={"instances": rows[1:]})
        until(
            lambda: metric(client, "fnserve_queued_instances", 'function="stamped"') == 36 + 99, "both queued"
        )
        publish(2)
        until(lambda: served_version(client) == 2, "version 2 to be swapped in")
        assert not big.done(), f"the swap took longer than the {HOLD_S}s hold: raise HOLD_S"
        answer, refused = big.result(), pinned.result()
    assert answer.status_code == 200 and answer.headers["x-model-version"] == "2"
    assert {p["version"] for p in answer.json()["predictions"]} == {2}
    assert [p["x"] for p in answer.json()["predictions"]] == list(range(100))
    assert refused.status_code == 404
    assert "version '1' of 'stamped' was replaced by version 2" in refused.json()["error"]


def test_parts_of_one_request_from_two_versions_are_refused_not_merged() -> None:
    """The pure rule the retry above rests on: no answer is stitched from two models."""
    same = Outputs.concat([Outputs.of([1.0], 1, "f", 3), Outputs.of([2.0], 1, "f", 3).slice(0, 1)])
    assert same.version == 3 and same.predictions() == [1.0, 2.0]
    with pytest.raises(VersionChanged, match="from version 3 to 4") as raised:
        Outputs.concat([Outputs.of([1.0], 1, "f", 3), Outputs.of([2.0], 1, "f", 4)])
    assert raised.value.status == 503 and raised.value.headers == {"Retry-After": "1"}

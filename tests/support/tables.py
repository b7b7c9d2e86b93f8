"""The ``tabled`` test function in a project of its own: versions, input tables, requests.

A test copies the function folder (so it can write a ``function.toml`` beside it), publishes
versions of its checkpoint (a weight) and precomputes tables from some of its input rows.
"""

from __future__ import annotations

import itertools
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from fnserve.runtime.store import CheckpointStore

FNS = Path(__file__).resolve().parent / "fns"
ARROW = "application/vnd.apache.arrow.stream"
COUNTRIES, SIZES = ("NL", "DE", "FR"), ("small", "large")


def tabled_project(tmp_path: Path, function_toml: str = "") -> Path:
    """``tmp_path/fns/tabled``: the function's folder, with ``function_toml`` beside it."""
    folder = tmp_path / "fns" / "tabled"
    shutil.copytree(FNS / "tabled", folder)
    if function_toml:
        (folder / "function.toml").write_text(function_toml)
    return folder


def store_of(tmp_path: Path) -> CheckpointStore:
    """The store the ``serve`` fixture and ``start_serve`` use."""
    return CheckpointStore(f"file://{tmp_path}/store", cache_dir=tmp_path / "publish-cache")


def publish_weight(store: CheckpointStore, weight: str) -> int:
    folder = store.cache_dir.parent / f"weights-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "weight.txt").write_text(weight)
    return store.publish("tabled", folder)


def rows(days: range) -> dict[str, list[Any]]:
    """Every combination of the other inputs, for these days."""
    combos = list(itertools.product(COUNTRIES, days, (False, True), SIZES))
    return {name: [c[i] for c in combos] for i, name in enumerate(("country", "day", "member", "size"))}


def write_rows(path: Path, columns: dict[str, list[Any]]) -> str:
    """``columns`` as a Parquet file (a CSV for a ``.csv`` path); returns its file:// URL."""
    table = pa.table(columns)
    if path.suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return f"file://{path}"


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def arrow_body(instances: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(instances)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def v2_body(instances: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = {"country": "BYTES", "day": "INT64", "member": "BOOL", "size": "BYTES"}
    return {
        "inputs": [
            {"name": k, "datatype": t, "shape": [len(instances)], "data": [i[k] for i in instances]}
            for k, t in kinds.items()
        ]
    }


PROTOCOLS = ("GET", "JSON", "JSON instances", "Arrow", "v2", "TF rows", "TF columns")


def ask(client: httpx.Client | Any, protocol: str, instances: list[dict[str, Any]]) -> httpx.Response:
    """``instances`` through one protocol (GET and JSON: the first instance only)."""
    if protocol == "GET":
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in instances[0].items()}
        return client.get("/function/tabled", params=params)
    if protocol == "JSON":
        return client.post("/function/tabled", json=instances[0])
    if protocol == "JSON instances":
        return client.post("/function/tabled", json={"instances": instances})
    if protocol == "Arrow":
        headers = {"content-type": ARROW, "accept": ARROW}
        return client.post("/function/tabled", content=arrow_body(instances), headers=headers)
    if protocol == "v2":
        return client.post("/v2/models/tabled/infer", json=v2_body(instances))
    if protocol == "TF rows":
        return client.post("/v1/models/tabled:predict", json={"instances": instances})
    columns = {k: [i[k] for i in instances] for k in instances[0]}
    return client.post("/v1/models/tabled:predict", json={"inputs": columns})


def answer(protocol: str, response: httpx.Response) -> Any:
    """What an answer says, without the version labels: the body (Arrow: its schema and rows)."""
    assert response.status_code == 200, response.text
    if protocol == "Arrow":
        table = pa.ipc.open_stream(response.content).read_all()
        return str(table.schema.remove_metadata()), table.to_pylist()
    body = response.json()
    if protocol == "v2":
        body.pop("model_version")
        body.pop("id", None)
    return body

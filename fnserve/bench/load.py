"""The load generator: one asyncio process, ``concurrency`` workers, each with its own keep-alive
connection, sending its next request as soon as the last one was answered (closed loop).

Requests are encoded to bytes before the sweep and answers are not decoded during it, and the
connections are :mod:`fnserve.bench.http1`'s lean ones, so one core of load drives several thousand
requests per second on loopback — more than one Python server process answers. Before measuring,
one request per batch size goes through the real client (:mod:`fnserve.client`) and its answer is
checked. Retries are off while measuring: a 429/503 counts as an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fnserve.bench.http1 import Connection, encode_request
from fnserve.bench.inputs import InputSpec
from fnserve.bench.plan import BenchError, BenchPlan, Step
from fnserve.bench.stats import StepResult
from fnserve.client import AsyncClient, ClientError, core
from fnserve.client import arrow as arrow_body
from fnserve.client.core import Call, error_message

Progress = Callable[[Step, float], None]  # (step, fraction of it done), called a few times a second
POOL = 64  # distinct instances generated; requests cycle through them
BODIES = 8  # distinct bodies per batch size


async def run_sweep(plan: BenchPlan, inputs: InputSpec, progress: Progress | None = None) -> list[StepResult]:
    """Run every step of the plan against the running function; one result per step, in order."""
    async with AsyncClient(plan.url, concurrency=4, timeout_s=plan.timeout_s, retries=0) as client:
        schema = await function_schema(client, plan.function)
        instances = inputs.instances(schema, max(POOL, max(plan.batch)))
        calls = {b: prepare(plan, instances, b) for b in plan.batch}
        for batch, prepared in calls.items():
            await probe(client, prepared[0], batch, plan.arrow)
    requests = {b: [encode_request(plan.url, call) for call in prepared] for b, prepared in calls.items()}
    connections = [Connection(plan.url, plan.timeout_s) for _ in range(max(plan.concurrency))]
    try:
        results = []
        for step in plan.steps():
            if plan.warmup_s:
                await drive(connections, requests[step.batch], step, plan.warmup_s, None)
            load = requests[step.batch]
            results.append(await drive(connections, load, step, plan.duration_s, plan.requests, progress))
        return results
    finally:
        for connection in connections:
            connection.close()


async def function_schema(client: AsyncClient, function: str) -> list[dict[str, Any]]:
    """The function's inputs as ``GET /functions`` describes them."""
    name = function.split("@")[0]
    served = {f["name"]: f for f in await client.functions()}
    if name not in served:
        raise BenchError(
            f"no function named {name!r} at {client.url}; it serves {', '.join(served) or 'none'}"
        )
    return list(served[name]["inputs"])


def prepare(plan: BenchPlan, instances: Sequence[Mapping[str, Any]], batch: int) -> list[Call]:
    """A few encoded requests of ``batch`` instances each, drawn in turn from the instances."""
    count = min(BODIES, max(1, len(instances) // batch)) if batch > 1 else len(instances)
    groups = [[instances[(i * batch + j) % len(instances)] for j in range(batch)] for i in range(count)]
    if plan.arrow:
        return [arrow_body.arrow_call(plan.function, arrow_body.to_table(columns(g))) for g in groups]
    if batch == 1:
        return [one_call(plan.function, g[0]) for g in groups]
    return [core.batch_call(plan.function, g) for g in groups]


def one_call(function: str, instance: Mapping[str, Any]) -> Call:
    """One instance the way a caller would send it: a GET, raw image bytes, else JSON."""
    images = [k for k, v in instance.items() if isinstance(v, bytes)]
    rest = {k: v for k, v in instance.items() if k not in images}
    if len(images) == 1 and all(core.queryable(v) for v in rest.values()):
        return core.bytes_call(function, instance[images[0]], "image/png", rest)
    return core.single_call(function, instance)


def columns(instances: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    return {name: [i[name] for i in instances] for name in instances[0]}


async def probe(client: AsyncClient, call: Call, batch: int, arrow: bool) -> None:
    """Send one request before measuring, so that refused inputs fail the run with the reason."""
    try:
        response = await client.send(call)
        if arrow:
            arrow_body.read_answer(response, call.expected)
        else:
            core.predictions(core.json_body(response), call.expected)
    except ClientError as exc:
        hint = " (give inputs with --data or -d)" if exc.status in (400, 415, 422) else ""
        raise BenchError(f"a request of {batch} instance(s) failed: {exc}{hint}") from None


async def drive(
    connections: Sequence[Connection],
    requests: Sequence[bytes],
    step: Step,
    duration_s: float,
    max_requests: int | None,
    progress: Progress | None = None,
) -> StepResult:
    """``step.concurrency`` workers send ``requests`` round robin until ``duration_s`` has passed or
    ``max_requests`` were sent; answers in flight at the end are awaited and counted."""
    latencies: list[float] = []
    failures: list[str] = []
    sent = 0
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker(connection: Connection) -> None:
        nonlocal sent
        while time.perf_counter() < deadline and (max_requests is None or sent < max_requests):
            request = requests[sent % len(requests)]
            sent += 1
            begun = time.perf_counter()
            try:
                status, body = await connection.request(request)
            except ClientError as exc:
                failures.append(str(exc))
                continue
            if status >= 400:
                failures.append(error_message(status, body))
            else:
                latencies.append(time.perf_counter() - begun)

    async def ticker() -> None:
        while progress is not None:
            elapsed = (time.perf_counter() - started) / duration_s
            progress(step, min(1.0, max(elapsed, sent / max_requests if max_requests else 0.0)))
            await asyncio.sleep(0.1)

    tick = asyncio.ensure_future(ticker())
    try:
        await asyncio.gather(*(worker(c) for c in connections[: step.concurrency]))
    finally:
        tick.cancel()
    wall_s = time.perf_counter() - started
    if progress is not None:
        progress(step, 1.0)
    first = failures[0] if failures else None
    return StepResult(step.concurrency, step.batch, wall_s, latencies, len(failures), first)

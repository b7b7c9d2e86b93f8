"""Asynchronous invocations (issue 15), measured on a real ``fn serve`` of recs: a burst of calls
submitted at once, all completed, none lost, none recorded twice — also when the server is killed
with SIGKILL in the middle of the burst and started again — and what a backlog of calls costs
synchronous callers while it drains.

Three parts, each on a fresh queue (``[async] queue`` points at a scratch folder; checkpoints come
from this project's store, ``fn train --missing`` first):

1. **burst**: ``--calls`` single-instance calls POSTed with ``Prefer: respond-async`` from
   ``--submitters`` connections; the submit rate (202s per second), the completion rate, and at the
   end every call's status read back;
2. **kill**: the burst again, on a fixed port; once half the calls are accepted the server gets
   SIGKILL (runs in flight, a backlog waiting) and is started again on the same queue; submitters
   meet a closed port meanwhile and try again (a call whose 202 never came is sent again, as a
   client would); every id answered 202, by either server, must end done;
3. **latency**: synchronous GETs at concurrency ``--probe-concurrency`` for ``--probe-s`` seconds
   on a server with no backlog; then on a server started over a queue holding ``--calls`` calls
   (written into the queue's folder beforehand, as another process sharing the queue would), while
   it works them off, and once it has: p50/p99 side by side, and how fast the backlog drained
   meanwhile and alone.

"Lost": a call answered 202 whose status is not ``done`` at the end. "Recorded twice": an outcome
written more than once (``results/`` holds one file per call, created exclusively: its count must
equal the calls). "Taken over": a call whose status says ``attempts: 2`` — claimed by the killed
server (computing, or about to), then run by the restarted one once the lease ran out: some of
these were computed twice, and each was recorded once (at-least-once runs, exactly-once outcomes).

    .venv/bin/python benchmarks/async_calls.py                 # 10,000 calls
    .venv/bin/python benchmarks/async_calls.py --calls 2000 --probe-s 3

The server runs pinned to core 0, the clients to core 1 (taskset, where present). Prints a table;
writes the figures to .bench/results/async-calls-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cold_start import QUERIES, ROOT, _check_alive, _pin, _train_missing, _wait_ready

from fnserve.bench.http1 import Connection, encode_request
from fnserve.client.core import Call, ClientError
from fnserve.runtime.asynccalls.records import CallRequest, new_id, parse_id
from fnserve.runtime.asynccalls.storage import CallStore
from fnserve.runtime.server import run
from fnserve.runtime.store import CheckpointStore

SCRATCH = ROOT / ".bench" / "async"
COUNTRIES = ("NL", "DE", "FR", "GB", "US", "ES")
JSON_HEADERS = {"content-type": "application/json"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10_000, help="calls submitted in each burst")
    parser.add_argument("--submitters", type=int, default=32, help="connections submitting at once")
    parser.add_argument("--probe-s", type=float, default=5.0, help="seconds of each synchronous probe")
    parser.add_argument("--probe-concurrency", type=int, default=4, help="synchronous requests in flight")
    args = parser.parse_args()
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the server has core 0
    _train_missing(["recs"])
    started = time.time()
    results = {  # the clients on uvloop, as the server; a lean HTTP client, so the server sets the pace
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join([".venv/bin/python benchmarks/async_calls.py", *sys.argv[1:]]),
        "calls": args.calls,
        "burst": run(burst(args)),
        "kill": run(burst_with_kill(args)),
        "latency": run(latency(args)),
        "load_average_after": os.getloadavg(),
    }
    results["took_s"] = round(time.time() - started)
    report(results)
    out = ROOT / ".bench" / "results" / f"async-calls-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")


# --- the server --------------------------------------------------------------------------------------


class Server:
    """``fn serve functions/recs`` (pinned to core 0), its queue in a scratch folder."""

    def __init__(self, queue: Path, name: str, port: int = 0):
        self.log = (SCRATCH / f"{name}.log").open("w+b")  # read back if it exits
        env = {
            **os.environ,
            "FNSERVE_ASYNC_QUEUE": queue.as_uri(),
            "FNSERVE_ASYNC_LEASE_S": "5",  # default 10: the kill's runs are taken over sooner
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        command = [
            *_pin(),
            sys.executable,
            "-m",
            "fnserve.cli",
            "serve",
            "functions/recs",
            "--port",
            str(port),
        ]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = self._url()
        with httpx.Client(timeout=5) as client:
            _wait_ready(client, self.url, self.proc, self.log)

    def _url(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            _check_alive(self.proc, self.log)
            for line in Path(self.log.name).read_text(errors="replace").splitlines():
                if "listening on " in line:
                    return line.rsplit("listening on ", 1)[1].strip()
            time.sleep(0.01)
        raise SystemExit("fn serve did not say where it listens")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.kill()


def fresh_queue(name: str) -> Path:
    queue = SCRATCH / name / "queue"
    shutil.rmtree(queue.parent, ignore_errors=True)
    queue.mkdir(parents=True)
    return queue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instance(i: int) -> dict[str, Any]:
    return {
        "user_country": COUNTRIES[i % len(COUNTRIES)],
        "user_language": "en",
        "day_of_week": 1 + i % 7,
        "season": ("winter", "spring", "summer", "autumn")[i % 4],
        "hotel_price": 50.0 + i % 300,
        "hotel_id": 100 + i % 5000,
    }


# --- what the clients do -----------------------------------------------------------------------------


async def submit_all(url: str, calls: int, submitters: int) -> tuple[dict[str, int], float]:
    """POST ``calls`` asynchronous calls from ``submitters`` connections; ``({id: instance}, seconds)``.
    A full queue (429) is waited out; a server that cannot be reached is tried again (the kill)."""
    ids: dict[str, int] = {}
    todo = iter(range(calls))
    headers = {**JSON_HEADERS, "prefer": "respond-async"}

    async def submitter() -> None:
        connection = Connection(url, 60)
        try:
            for i in todo:
                raw = encode_request(
                    url, Call("POST", "/function/recs", content=orjson.dumps(instance(i)), headers=headers)
                )
                while True:
                    try:
                        status, body = await connection.request(raw)
                    except ClientError:  # no server there (killed, starting again): as a client would
                        await asyncio.sleep(0.1)
                        continue
                    if status == 202:
                        ids[orjson.loads(body)["id"]] = i
                        break
                    if status not in (429, 503):
                        raise SystemExit(f"submitting failed: {status} {body[:300]!r}")
                    await asyncio.sleep(1)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(submitters)))
    return ids, time.perf_counter() - started


async def metric(url: str, name: str) -> float:
    """One of the server's figures for recs (``fnserve_async_<name>``); 0 before it has one."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f'fnserve_async_{name}{{function="recs"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def completed(url: str) -> float:
    return await metric(url, "calls_completed_total")


async def wait_drained(url: str, timeout_s: float = 900.0) -> float:
    """Seconds until the server has no call of recs waiting or running (runs cut short by a kill
    count as waiting until their leases run out and it takes them over)."""
    started = time.perf_counter()
    while await metric(url, "calls_queued") + await metric(url, "calls_running") > 0:
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"calls still waiting after {timeout_s:g} s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def read_back(url: str, ids: dict[str, int]) -> dict[str, Any]:
    """Every call's status: done with one prediction (its own), run once or twice; what is not."""
    statuses: dict[str, dict[str, Any]] = {}
    pending = iter(list(ids))

    async def reader() -> None:
        connection = Connection(url, 60)
        try:
            for call_id in pending:
                _, body = await connection.request(encode_request(url, Call("GET", f"/async/{call_id}")))
                statuses[call_id] = orjson.loads(body)
        finally:
            connection.close()

    await asyncio.gather(*(reader() for _ in range(8)))
    done = [s for s in statuses.values() if s.get("status") == "done"]
    return {
        "accepted": len(ids),
        "done": len(done),
        "with_one_prediction": sum(1 for s in done if len(s.get("result", {}).get("predictions", [])) == 1),
        "lost": len(ids) - len(done),
        "failed": sum(1 for s in statuses.values() if s.get("status") == "failed"),
        "run_twice": sum(1 for s in done if s.get("attempts", 1) > 1),
    }


def recorded(queue: Path, ids: dict[str, int]) -> dict[str, int]:
    """The outcome files in the queue against the calls answered 202. A call has one file or none
    (``results/{key}``, created exclusively): a second outcome of a call is refused, not written,
    and counted by the server as discarded. Outcomes of no acknowledged call: calls stored whose
    202 the kill cut off (the client sent them again, under new ids)."""
    names = {p.name for p in (queue / "serve" / "recs" / "results").iterdir() if not p.name.endswith(".tmp")}
    keys = {parse_id(call_id)[1] for call_id in ids}
    return {
        "outcomes": len(names & keys),
        "without_outcome": len(keys - names),
        "stored_202_cut_off": len(names - keys),
    }


# --- the parts ---------------------------------------------------------------------------------------


async def burst(args: argparse.Namespace) -> dict[str, Any]:
    queue = fresh_queue("burst")
    server = Server(queue, "burst")
    try:
        started = time.perf_counter()
        ids, submit_s = await submit_all(server.url, args.calls, args.submitters)
        left = await metric(server.url, "calls_queued") + await metric(server.url, "calls_running")
        drain_s = await wait_drained(server.url)
        all_done_s = time.perf_counter() - started
        figures: dict[str, Any] = {
            "submit_s": round(submit_s, 2),
            "submitted_per_s": round(len(ids) / submit_s),
            "waiting_when_submitted": int(left),
            "all_done_s": round(all_done_s, 2),
            "completed_per_s": round(len(ids) / all_done_s),
            "drain_after_submit_s": round(drain_s, 2),
        }
        figures.update(await read_back(server.url, ids))
        figures.update(recorded(queue, ids))
        figures["discarded"] = int(await metric(server.url, "calls_discarded_total"))
    finally:
        server.stop()
    return figures


async def burst_with_kill(args: argparse.Namespace) -> dict[str, Any]:
    queue = fresh_queue("kill")
    port = free_port()
    server = Server(queue, "kill", port)
    figures: dict[str, Any] = {}
    submitting = asyncio.ensure_future(submit_all(server.url, args.calls, args.submitters))
    try:
        started = time.perf_counter()
        while len_accepted(server) < args.calls // 2:  # half accepted: kill it mid-burst
            await asyncio.sleep(0.01)
        figures["accepted_before_kill"] = int(len_accepted(server))
        figures["completed_before_kill"] = int(await metric(server.url, "calls_completed_total"))
        server.kill()
        restarted = time.perf_counter()
        server = Server(queue, "kill-restarted", port)
        figures["restart_to_ready_s"] = round(time.perf_counter() - restarted, 2)
        ids, _ = await submitting
        await asyncio.sleep(1.0)  # its first scans have read the queue back by then
        figures["drained_after_restart_s"] = round(await wait_drained(server.url) + 1.0, 2)
        figures["all_done_s"] = round(time.perf_counter() - started, 2)
        figures.update(await read_back(server.url, ids))
        figures.update(recorded(queue, ids))
        figures["discarded_after_restart"] = int(await metric(server.url, "calls_discarded_total"))
    finally:
        submitting.cancel()
        server.stop()
    return figures


def len_accepted(server: Server) -> int:
    """Calls the server has accepted (its queue's request files plus outcomes, read from disk:
    counters die with the process)."""
    folder = SCRATCH / "kill" / "queue" / "serve" / "recs"
    return sum(len(os.listdir(folder / part)) for part in ("requests", "results") if (folder / part).exists())


async def probe(url: str, seconds: float, concurrency: int) -> list[float]:
    """Synchronous GETs, ``concurrency`` in flight, for ``seconds``: the latencies in ms."""
    latencies: list[float] = []
    raw = encode_request(url, Call("GET", QUERIES["recs"] or ""))
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        connection = Connection(url, 60)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, body = await connection.request(raw)
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    raise SystemExit(f"a synchronous call failed: {status} {body[:300]!r}")
        finally:
            connection.close()

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


def percentiles(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "requests": len(ordered),
        "requests_per_s": round(len(ordered) / seconds),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


def write_backlog(queue: Path, calls: int) -> list[str]:
    """``calls`` calls written straight into the queue, as another process sharing it would."""
    storage = CallStore(CheckpointStore(queue.as_uri(), cache_dir=SCRATCH / "cache"), queue.as_uri(), "serve")
    ids = []
    for i in range(calls):
        now = time.time()
        call = CallRequest(
            new_id("recs", now),
            "POST",
            "/function/recs",
            "",
            tuple(JSON_HEADERS.items()),
            orjson.dumps(instance(i)),
            now,
        )
        storage.put_request("recs", parse_id(call.id)[1], call)
        ids.append(call.id)
    return ids


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    """The probe on a server with no backlog; then on one started over a queue holding ``calls``
    calls (it starts working them off once its model is loaded), while they drain and after."""
    queue = fresh_queue("latency")
    seconds, concurrency = args.probe_s, args.probe_concurrency
    server = Server(queue, "latency")
    try:
        await probe(server.url, 1.0, concurrency)  # warm
        before = percentiles(await probe(server.url, seconds, concurrency), seconds)
    finally:
        server.stop()
    backlog = await asyncio.to_thread(write_backlog, queue, args.calls)
    server = Server(queue, "latency-backlog")
    try:
        done_before = await completed(server.url)
        draining = percentiles(await probe(server.url, seconds, concurrency), seconds)
        done_meanwhile = await completed(server.url) - done_before
        draining["async_completed_per_s"] = round(done_meanwhile / seconds)
        alone_from, alone_started = await completed(server.url), time.perf_counter()
        await wait_drained(server.url)
        alone_s = time.perf_counter() - alone_started
        alone = (await completed(server.url) - alone_from) / alone_s
        await probe(server.url, 1.0, concurrency)
        after = percentiles(await probe(server.url, seconds, concurrency), seconds)
        total_completed = await completed(server.url)
    finally:
        server.stop()
    return {
        "concurrency": concurrency,
        "backlog": len(backlog),
        "completed": int(total_completed),
        "completed_before_the_probe": int(done_before),
        "drain_alone_per_s": round(alone),
        "no backlog (before)": before,
        "backlog draining": draining,
        "no backlog (after)": after,
    }


# --- the table ---------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> None:
    burst, kill, lat = results["burst"], results["kill"], results["latency"]
    print(f"\nasynchronous calls to recs on fn serve: {results['calls']:,} submitted in a burst\n")
    print(f"{'':34}{'burst':>10}{'burst + SIGKILL':>17}")
    for label, key in [
        ("submitted (202) per s", "submitted_per_s"),
        ("accepted", "accepted"),
        ("done", "done"),
        ("lost", "lost"),
        ("failed", "failed"),
        ("outcomes recorded (one file each)", "outcomes"),
        ("accepted without an outcome", "without_outcome"),
        ("second outcomes refused", "discarded"),
        ("taken over after the kill", "run_twice"),
        ("stored, 202 cut off by the kill", "stored_202_cut_off"),
        ("all done after s", "all_done_s"),
        ("completed per s (overall)", "completed_per_s"),
        ("accepted before the kill", "accepted_before_kill"),
        ("completed before the kill", "completed_before_kill"),
        ("restart to ready s", "restart_to_ready_s"),
        ("drained after the restart s", "drained_after_restart_s"),
    ]:
        print(f"{label:34}{burst.get(key, ''):>10}{kill.get(key, kill.get(key + '_after_restart', '')):>17}")
    print(f"\nsynchronous GET latency, concurrency {lat['concurrency']}, backlog {lat['backlog']:,} calls")
    print(f"{'':22}{'requests/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'async completed/s':>19}")
    for label in ("no backlog (before)", "backlog draining", "no backlog (after)"):
        f = lat[label]
        meanwhile = f.get("async_completed_per_s", "")
        print(f"{label:22}{f['requests_per_s']:>11}{f['p50_ms']:>9}{f['p99_ms']:>9}{meanwhile:>19}")
    print(f"{'backlog alone':22}{'':>11}{'':>9}{'':>9}{lat['drain_alone_per_s']:>19}")


if __name__ == "__main__":
    main()

"""What the gateway costs: the same function measured direct to its replica and through the gateway,
side by side in one run, plus cold starts from zero.

``--target local`` (the default): local platform, one replica (`fn serve` of the function's folder)
pinned to core 0; the gateway (`fn gateway`) pinned to core 1, where the load generator (wrk, one
thread, keep-alive, closed loop) runs too — on a 2-core machine the gateway cannot have a core of
its own, and wrk needs little.
Each measurement alternates direct and gateway, so drift hits both alike.

``--target docker`` (what issue 5 asks for): the docker target as users run it, in a scratch project
(.bench/gateway-docker, over this project's checkpoint store): one replica container of the
function's image (min and max replicas 1: no scale to zero while measuring) on a bridge network of
its own (`fnserve-bench`, removed at the end), and the gateway *container* (`fn gateway --target
docker`, named fnserve-bench-gateway, published on a free 127.0.0.1 port). Direct = wrk to the
replica's address on the bridge network (Linux routes to it from the host); gateway = wrk to the
published port (docker-proxy, then the gateway, then the replica). Pinned with `docker update
--cpuset-cpus`: the replica on core 0, the gateway container on core 1; wrk on core 1 with taskset
(docker-proxy is not pinned). Every container it started is removed at the end, on failure too.
Images: `double` is built from tests/support/fns/double with the python template, `recs` is this project's
`fn build recs` image (built when missing).

    .venv/bin/python benchmarks/gateway.py                      # double: HTTP overhead at its worst
    .venv/bin/python benchmarks/gateway.py --function recs      # the example model (train it first)
    .venv/bin/python benchmarks/gateway.py --seconds 3 --cold-starts 3
    .venv/bin/python benchmarks/gateway.py --target docker --function recs --cold-starts 0
    .venv/bin/python benchmarks/gateway.py --cold-starts 0 --shadow 0.1 --shadow 1   # what shadowing costs

Targets (issue 5): at most +1 ms on p50 at concurrency 1; at least 70% of the direct throughput
at concurrency 64. Results are printed and written to .bench/results/gateway-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fnserve.docker.replicas import PROJECT_LABEL, DockerSettings, project_id  # noqa: E402
from fnserve.gateway.platform import FunctionDeployment, Scaling, VersionDeployment  # noqa: E402
from fnserve.local.platform import LocalPlatform  # noqa: E402
from fnserve.project import ProjectSettings  # noqa: E402

WORK = ROOT / ".bench" / "gateway"
DOCKER_WORK = ROOT / ".bench" / "gateway-docker"
GATEWAY_CONTAINER = "fnserve-bench-gateway"
NETWORK = "fnserve-bench"  # its own bridge network: tests running beside it create and remove theirs
TOKEN = "gateway-benchmark"
REPLICA_CORE, GATEWAY_CORE, LOADGEN_CORE = 0, 1, 1
FUNCTIONS = {  # name -> (function folder, query of one prediction)
    "double": (ROOT / "tests/support/fns/double", "x=21"),
    "recs": (
        ROOT / "functions/recs",
        "user_country=NL&user_language=nl&day_of_week=5&season=winter&hotel_price=129.0&hotel_id=4711",
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    """One wrk run: requests/s, p50 and p99 in ms, errors (non-2xx and socket errors)."""
    argv = [
        "taskset",
        "-c",
        str(LOADGEN_CORE),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        url,
    ]
    text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket_errors:
        errors += sum(map(int, socket_errors.groups()))
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors += int(non_2xx.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%"), "errors": errors}


def pin(pid: int, core: int) -> None:
    """Every thread of the process (TensorFlow's pools were started on the gateway's core)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {core})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, function: str, folder: Path, checkpoint_version: str = "latest"):
        self.function, self.folder, self.checkpoint_version = function, folder, checkpoint_version
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    def start(self) -> None:
        """A scratch project in .bench/gateway (state, logs) over this project's checkpoint store."""
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        root = ProjectSettings.load(ROOT, os.environ)
        env = {**os.environ, "FNSERVE_STORE": root.store, "FNSERVE_CACHE": str(root.cache_dir)}
        env.update(FNSERVE_GATEWAY_TOKEN=TOKEN, TF_CPP_MIN_LOG_LEVEL="2", COLUMNS="200")
        scaling = Scaling(min_replicas=1, max_replicas=1)
        platform = LocalPlatform(ProjectSettings.load(WORK, env))
        platform.save_state(
            FunctionDeployment(
                self.function,
                {"1": VersionDeployment(str(self.folder), checkpoint_version=self.checkpoint_version)},
                scaling,
            )
        )
        platform.close(0)
        argv = ["taskset", "-c", str(GATEWAY_CORE), sys.executable, "-m", "fnserve.cli", "gateway"]
        self.log = (WORK / "gateway.log").open("wb")
        self.proc = subprocess.Popen(
            [*argv, "--port", str(self.port)], cwd=WORK, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.replica = self.wait_replica()

    def gateway_cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def status(self) -> dict[str, Any]:
        return dict(self.admin.get(f"/admin/functions/{self.function}").json())

    def wait_replica(self, timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the gateway exited; see {WORK / 'gateway.log'}")
            try:
                replicas = [r for r in self.status()["versions"][0]["replicas"] if r["ready"]]
            except (httpx.HTTPError, KeyError, IndexError):
                replicas = []
            if replicas:
                pin(int(replicas[0]["id"]), REPLICA_CORE)
                return dict(replicas[0])
            time.sleep(0.2)
        raise SystemExit(f"no replica became ready; see {WORK / 'gateway.log'}")

    def stop(self) -> None:
        if not hasattr(self, "proc"):
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class DockerBench:
    """The docker target: the gateway container and one replica container, as `fn deploy` makes them."""

    def __init__(self, function: str, folder: Path, checkpoint_version: str = "latest"):
        from fnserve.docker_engine import DockerEngine

        self.function, self.folder, self.checkpoint_version = function, folder, checkpoint_version
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        self.engine = DockerEngine.connect()
        self.pinned: dict[str, str] = {}
        self.image = ""

    def start(self) -> None:
        from fnserve.docker.gateway_container import start_gateway
        from fnserve.docker.platform import DockerPlatform
        from fnserve.images.builds import build_image, prepare_build

        shutil.rmtree(DOCKER_WORK, ignore_errors=True)
        DOCKER_WORK.mkdir(parents=True)
        root = ProjectSettings.load(ROOT, os.environ)
        self.env = env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FNSERVE_")},
            "FNSERVE_STORE": root.store,
            "FNSERVE_CACHE": str(DOCKER_WORK / "cache"),
            "FNSERVE_GATEWAY_TOKEN": TOKEN,
            "FNSERVE_GATEWAY_PORT": str(self.port),
            "FNSERVE_DOCKER_GATEWAY_NAME": GATEWAY_CONTAINER,
            "FNSERVE_DOCKER_NETWORK": NETWORK,
        }
        settings = ProjectSettings.load(DOCKER_WORK, env)
        if (ROOT / "functions" / self.function).is_dir():  # this project's, as `fn build NAME` builds it
            plan = prepare_build(root, self.function, self.engine)
        else:  # a test function: a function folder of the scratch project, python template
            target = DOCKER_WORK / "functions" / self.function
            target.mkdir(parents=True)
            shutil.copy(self.folder / "predict.py", target / "predict.py")
            (target / "function.toml").write_text('[build]\ntemplate = "python"\n')
            plan = prepare_build(settings, self.function, self.engine)
        self.image = build_image(plan, self.engine, on_output=lambda line: None).plan.image
        print(f"image {self.image}", flush=True)
        docker = DockerSettings.load(DOCKER_WORK, env)
        platform = DockerPlatform(settings, self.engine, docker)
        scaling = Scaling(min_replicas=1, max_replicas=1)
        version = VersionDeployment(self.image, checkpoint_version=self.checkpoint_version)
        platform.save_state(FunctionDeployment(self.function, {"1": version}, scaling))
        self.gateway_url = start_gateway(settings, self.engine, print, environ=env)
        self.gateway_id = self.engine.list_containers(name=GATEWAY_CONTAINER)[0].id
        self.pin_container(self.gateway_id, GATEWAY_CORE)
        where = f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}'
        inspect = ["docker", "inspect", "-f", where, self.gateway_id]
        address = subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()
        self.bridge_url = f"http://{address}:8080"  # the gateway without docker-proxy in front
        self.replica = self.wait_replica()

    def pin_container(self, container: str, core: int) -> None:
        subprocess.run(
            ["docker", "update", "--cpuset-cpus", str(core), container], check=True, capture_output=True
        )
        self.pinned[container[:12]] = str(core)

    def gateway_cpu_s(self) -> float:
        """CPU seconds of every process of the gateway container (host pids from `docker top`)."""
        top = subprocess.run(["docker", "top", self.gateway_id, "-eo", "pid"], capture_output=True, text=True)
        return sum(cpu_seconds(int(pid)) for pid in top.stdout.split()[1:] if pid.isdigit())

    def status(self) -> dict[str, Any]:
        return dict(self.admin.get(f"/admin/functions/{self.function}").json())

    def wait_replica(self, timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                replicas = [r for r in self.status()["versions"][0]["replicas"] if r["ready"]]
            except (httpx.HTTPError, KeyError, IndexError):
                replicas = []
            if replicas:
                self.pin_container(str(replicas[0]["id"]), REPLICA_CORE)
                return dict(replicas[0])
            time.sleep(0.2)
        raise SystemExit(f"no replica became ready; see docker logs {GATEWAY_CONTAINER}")

    def stop(self) -> None:
        """The gateway container first (so it starts nothing more), then every container of the project."""
        mine = {PROJECT_LABEL: project_id(DOCKER_WORK)}
        for found in (
            lambda: self.engine.list_containers(name=GATEWAY_CONTAINER),
            lambda: self.engine.list_containers(mine),
        ):
            for container in found():  # listed once the gateway is gone: it starts no standby after
                try:
                    self.engine.stop(container.id, timeout_s=5)
                finally:
                    self.engine.remove(container.id)
        self.engine.remove_network(NETWORK)
        self.engine.close()


def overhead(bench: Bench | DockerBench, query: str, seconds: int, rounds: int) -> dict[str, Any]:
    """Direct and gateway, alternating, at concurrency 1 and 64; the best round of each. On the docker
    target also the gateway container at its bridge address ("bridge": no docker-proxy in front)."""
    path = f"/function/{bench.function}?{query}"
    urls = {"direct": bench.replica["url"] + path, "gateway": bench.url + path}
    if isinstance(bench, DockerBench):
        urls["bridge"] = bench.bridge_url + path
    for url in urls.values():
        wrk(url, 8, 2)  # warm-up: connections, caches, the model's first calls
    results: dict[str, list[dict[str, float]]] = {f"{k}-c{c}": [] for k in urls for c in (1, 64)}
    cpu: list[float] = []
    for _ in range(rounds):
        for connections in (1, 64):
            for kind, url in urls.items():
                before = bench.gateway_cpu_s()
                run = wrk(url, connections, seconds)
                if kind == "gateway" and connections == 64:
                    cpu.append((bench.gateway_cpu_s() - before) / (run["rps"] * seconds) * 1e6)
                results[f"{kind}-c{connections}"].append(run)
    best = {
        k: min(v, key=lambda r: r["p50_ms"]) if k.endswith("c1") else max(v, key=lambda r: r["rps"])
        for k, v in results.items()
    }
    best["gateway_cpu_us_per_request"] = {"median": statistics.median(cpu)}
    return best


def shadow_cost(bench: Bench, query: str, seconds: int, rounds: int, fraction: float) -> dict[str, Any]:
    """The gateway's CPU per caller request at concurrency 64 while a rollout's shadow stage copies
    ``fraction`` of the requests to a candidate, against the same rollout paused (no copies), in
    alternation. The candidate is version 2 of the same function, its replica pinned beside the first."""
    policy = {
        "stages": [{"shadow": True, "requests": 10**9}, {"weight": 100}],  # stays in shadow while measured
        "shadow_fraction": fraction,
    }
    body = {"version": "2", "image": str(bench.folder), "policy": policy}
    bench.admin.put(f"/admin/functions/{bench.function}", json=body).raise_for_status()
    deadline = time.monotonic() + 180
    while True:
        versions = {v["version"]: v for v in bench.status()["versions"]}
        ready = [r for r in versions["2"]["replicas"] if r["ready"]]
        if ready:
            pin(int(ready[0]["id"]), REPLICA_CORE)
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the candidate's replica did not become ready; see {WORK / 'gateway.log'}")
        time.sleep(0.2)
    url = f"{bench.url}/function/{bench.function}?{query}"
    runs: dict[str, list[dict[str, float]]] = {"paused": [], "shadow": []}
    for _ in range(rounds):
        for mode in ("paused", "shadow"):
            change = {"paused": mode == "paused"}
            bench.admin.post(f"/admin/functions/{bench.function}/rollout", json=change).raise_for_status()
            wrk(url, 64, 1)  # warm-up: the mode's first copies
            copies_before = bench.status()["rollout"]["window"]["shadow"]["copies"] if mode == "shadow" else 0
            before = bench.gateway_cpu_s()
            run = wrk(url, 64, seconds)
            run["cpu_us"] = (bench.gateway_cpu_s() - before) / (run["rps"] * seconds) * 1e6
            if mode == "shadow":
                copied = bench.status()["rollout"]["window"]["shadow"]["copies"] - copies_before
                run["copied_share"] = copied / (run["rps"] * seconds)
            runs[mode].append(run)
    # the CPU's speed drifts between rounds: each round's ratio, then the median of those
    ratios = [s["cpu_us"] / p["cpu_us"] for p, s in zip(runs["paused"], runs["shadow"], strict=True)]
    return {
        "fraction": fraction,
        "paused_cpu_us": statistics.median(r["cpu_us"] for r in runs["paused"]),
        "shadow_cpu_us": statistics.median(r["cpu_us"] for r in runs["shadow"]),
        "extra": statistics.median(ratios) - 1,
        "round_ratios": [round(r, 3) for r in ratios],
        "runs": runs,
    }


def cold_starts(bench: Bench | DockerBench, query: str, count: int) -> list[dict[str, Any]]:
    """Scale to zero after 1 s idle, then time the request that wakes the function; ``count`` times."""
    bench.admin.post(
        f"/admin/functions/{bench.function}/scale", json={"min_replicas": 0, "scale_to_zero_after_s": 1}
    ).raise_for_status()
    starts = []
    for _ in range(count):
        deadline = time.monotonic() + 60
        while bench.status()["versions"][0]["replicas"] and time.monotonic() < deadline:
            time.sleep(0.2)
        began = time.perf_counter()
        answer = httpx.get(f"{bench.url}/function/{bench.function}?{query}", timeout=120)
        seen_s = time.perf_counter() - began
        answer.raise_for_status()
        time.sleep(0.3)  # the gateway asks the replica for its parts just after it turned ready
        starts.append({"caller_s": round(seen_s, 3), **(bench.status()["last_cold_start"] or {})})
    return starts


def report(function: str, target: str, best: dict[str, Any], starts: list[dict[str, Any]]) -> dict[str, Any]:
    d1, g1, d64, g64 = (best[k] for k in ("direct-c1", "gateway-c1", "direct-c64", "gateway-c64"))
    delta_ms, ratio = g1["p50_ms"] - d1["p50_ms"], g64["rps"] / d64["rps"]
    print(f"\n{function}: direct to one replica vs through the gateway ({target} target)\n")
    print(f"{'':14}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    rows = [("direct c=1", d1), ("gateway c=1", g1), ("direct c=64", d64), ("gateway c=64", g64)]
    if "bridge-c1" in best:
        rows += [("gw bridge c=1", best["bridge-c1"]), ("gw bridge c=64", best["bridge-c64"])]
    for name, r in rows:
        print(f"{name:14}{r['rps']:>10,.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.2f}{r['errors']:>8.0f}")
    cpu = best["gateway_cpu_us_per_request"]["median"]
    print(f"\np50 added at c=1: {delta_ms:+.3f} ms (target <= +1 ms): {'PASS' if delta_ms <= 1 else 'FAIL'}")
    print(f"throughput at c=64: {ratio:.0%} of direct (target >= 70%): {'PASS' if ratio >= 0.7 else 'FAIL'}")
    print(f"gateway CPU per request at c=64: {cpu:.0f} us")
    summary: dict[str, Any] = {"p50_delta_ms": delta_ms, "throughput_ratio": ratio, "gateway_cpu_us": cpu}
    if "bridge-c1" in best:
        b_delta = best["bridge-c1"]["p50_ms"] - d1["p50_ms"]
        b_ratio = best["bridge-c64"]["rps"] / d64["rps"]
        print(f"without docker-proxy (gateway at its bridge address): {b_delta:+.3f} ms, {b_ratio:.0%}")
        summary["bridge_p50_delta_ms"], summary["bridge_throughput_ratio"] = b_delta, b_ratio
    if starts:
        totals = sorted(s["caller_s"] for s in starts)
        print(
            f"\ncold start from zero, as the caller saw it ({len(starts)} runs): "
            f"p50 {statistics.median(totals):.2f} s, max {totals[-1]:.2f} s"
        )
        for part in ("total", "start", "fetch", "load"):
            values = [s[f"{part}_s"] for s in starts if f"{part}_s" in s]
            if values:
                print(f"  {part:6} p50 {statistics.median(values):.3f} s  max {max(values):.3f} s")
        summary["cold_start_p50_s"], summary["cold_start_max_s"] = statistics.median(totals), totals[-1]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--function", choices=sorted(FUNCTIONS), default="double")
    parser.add_argument("--target", choices=("local", "docker"), default="local")
    parser.add_argument("--seconds", type=int, default=5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of direct and gateway")
    parser.add_argument("--cold-starts", type=int, default=5, help="scale-from-zero runs (0: none)")
    parser.add_argument(
        "--shadow",
        type=float,
        action="append",
        metavar="FRACTION",
        help="local: also the gateway's CPU per request while a rollout shadows FRACTION of the traffic "
        "(repeatable; target: at most 10%% extra at the policy's default 0.1)",
    )
    args = parser.parse_args()
    if args.shadow and args.target != "local":
        raise SystemExit("--shadow measures the local target's gateway")
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise SystemExit("this benchmark needs wrk and taskset (apt-get install -y wrk util-linux)")
    folder, query = FUNCTIONS[args.function]
    bench = (DockerBench if args.target == "docker" else Bench)(args.function, folder)
    load_before = os.getloadavg()
    try:
        bench.start()
        best = overhead(bench, query, args.seconds, args.rounds)
        starts = cold_starts(bench, query, args.cold_starts) if args.cold_starts else []
        shadows = []
        for fraction in args.shadow or []:
            assert isinstance(bench, Bench)
            if shadows:  # the candidate of the last measurement is rolled back first
                bench.admin.post(f"/admin/functions/{bench.function}/rollback").raise_for_status()
            shadows.append(shadow_cost(bench, query, args.seconds, args.rounds, fraction))
    finally:
        bench.stop()
    load_after = os.getloadavg()
    summary = report(args.function, args.target, best, starts)
    for s in shadows:
        verdict = "PASS" if s["extra"] <= 0.10 or s["fraction"] > 0.1 else "FAIL"
        print(
            f"shadowing {s['fraction']:.0%} of the traffic: gateway CPU {s['shadow_cpu_us']:.0f} vs "
            f"{s['paused_cpu_us']:.0f} us per request paused (medians), {s['extra']:+.1%} "
            f"(median of the rounds' ratios {s['round_ratios']})"
            + (f" (target <= +10%: {verdict})" if s["fraction"] <= 0.1 else "")
        )
    summary["shadow"] = [{k: v for k, v in s.items() if k != "runs"} for s in shadows]
    summary["loadavg_before"], summary["loadavg_after"] = load_before, load_after
    if isinstance(bench, DockerBench):
        summary["image"], summary["pinned_cpus"] = bench.image, bench.pinned
    print(f"load average before {load_before}, after {load_after}")
    out = (
        ROOT
        / ".bench"
        / "results"
        / f"gateway-{args.target}-{args.function}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "function": args.function,
        "target": args.target,
        "summary": summary,
        "runs": best,
        "cold_starts": starts,
        "shadow": shadows,
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"\nraw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

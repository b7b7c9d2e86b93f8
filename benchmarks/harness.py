"""Processes and load: start a server pinned to its core, drive it with wrk pinned to the other.

The load generator is wrk (C, epoll, one thread, keep-alive connections, closed loop): a Python
load generator on one core saturates before a fast server does. Each request is precomputed
once by wrk's Lua ``init`` from body files, so generating load costs wrk next to nothing.

    with Server("fnserve", argv, ready_url=...) as server:
        stats = run_wrk(server.url, request, concurrency=64, seconds=10)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from scenarios import ROOT, Request

WORK = ROOT / ".bench"
SERVER_CORE, LOADGEN_CORE = 0, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv]


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package when it is missing (as root)."""
    if found := shutil.which("wrk"):
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    if found := shutil.which("wrk"):
        return found
    raise SystemExit(
        "this benchmark needs wrk (apt-get install wrk, brew install wrk) and could not install it"
    )


class Server:
    """A server process pinned to the server core, in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        ready_path: str,
        *,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        start_timeout_s: float = 180,
    ):
        self.name, self.argv, self.port, self.ready_path = name, argv, port, ready_path
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd, self.start_timeout_s = cwd, start_timeout_s
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = WORK / "logs" / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            pinned(SERVER_CORE, self.argv),
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its workers too
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            if http_status(self.url + self.ready_path) == 200:
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"{self.name} was not ready after {self.start_timeout_s:.0f} s; see {self.log_path}"
        )

    def cpu_seconds(self) -> float:
        """CPU time the server (all its processes) has used: a cost per request that, unlike
        throughput, other processes on the machine barely disturb."""
        assert self.proc is not None
        stats = process_stats()
        ticks = sum(stats[p][1] for p in process_tree(self.proc.pid, stats))
        return ticks / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # the group we started (start_new_session): only our own processes
        stats = process_stats()
        started = {pid: stats[pid][2] for pid in process_tree(pgid, stats)}
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            try:
                self.proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers in sessions of their own that outlived the server (a peer's inference process)
        # go too: by pid, and only the very processes seen above (same start time).
        now = process_stats()
        for pid, start in started.items():
            if pid in now and now[pid][2] == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def process_stats() -> dict[int, tuple[int, int, int]]:
    """Every live process: pid -> (parent pid, CPU clock ticks used, start time)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the name: state, ppid, ...
        except OSError:
            continue  # exited meanwhile
        out[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19]))
    return out


def process_tree(pid: int, stats: dict[int, tuple[int, int, int]] | None = None) -> list[int]:
    """``pid`` and all its descendants (a peer's workers may sit in sessions of their own)."""
    stats = process_stats() if stats is None else stats
    tree, i = [pid], 0
    while i < len(tree):
        tree += [child for child, (parent, _, _) in stats.items() if parent == tree[i]]
        i += 1
    return [p for p in tree if p in stats]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def probe(base_url: str, request: Request) -> tuple[int, bytes]:
    """Send the first variant once, as the load generator will; the status and the body."""
    path, body = request.variants[0]
    req = urllib.request.Request(
        base_url + path, data=body or None, method=request.method, headers=request.headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc).encode()


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int  # connect/read/write failures, timeouts and non-2xx answers
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


LUA_TEMPLATE = """
local files = {files}
local paths = {paths}
local prepared, i = {{}}, 0
init = function(args)
  for n, name in ipairs(files) do
    local body = nil
    if name ~= "" then
      local f = assert(io.open(name, "rb")); body = f:read("*a"); f:close()
    end
    prepared[n] = wrk.format({method}, paths[n], {headers}, body)
  end
end
request = function()
  i = i % #prepared + 1
  return prepared[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII text


def write_lua(request: Request, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, (_, body) in enumerate(request.variants):
        if body:
            (folder / f"{n}.body").write_bytes(body)
        files.append(str(folder / f"{n}.body") if body else "")
    headers = (
        "{" + ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in request.headers.items()) + "}"
    )
    script = LUA_TEMPLATE.format(
        files="{" + ", ".join(map(lua_string, files)) + "}",
        paths="{" + ", ".join(lua_string(p) for p, _ in request.variants) + "}",
        method=lua_string(request.method),
        headers=headers,
    )
    path = folder / "load.lua"
    path.write_text(script)
    return path


def run_wrk(base_url: str, request: Request, concurrency: int, seconds: float, folder: Path) -> LoadResult:
    """One closed-loop wrk run: ``concurrency`` keep-alive connections for ``seconds``."""
    script = write_lua(request, folder)
    argv = [ensure_wrk(), "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script)]
    done = subprocess.run(
        pinned(LOADGEN_CORE, [*argv, base_url + request.variants[0][0]]),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    match = re.search(r"WRK_RESULT (\{.*\})", done.stdout)
    if not match:
        print(done.stdout, done.stderr, file=sys.stderr)
        raise RuntimeError(f"wrk failed (exit {done.returncode})")
    raw = json.loads(match.group(1))
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors=raw["errors"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )

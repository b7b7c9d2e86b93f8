"""``python -m fnserve.runtime FOLDER...``: serve function folders with the runtime alone.

What images and local replicas run. It imports the runtime and whatever the function files
import, never the CLI (click, rich), the gateway or a deploy target, so a replica starts sooner
and holds less. Settings come from the environment (``FNSERVE_STORE``, ``FNSERVE_CACHE``,
``FNSERVE_HOST``, ``FNSERVE_PORT``, ``FNSERVE_STORE_OPTIONS``, ``FNSERVE_CHECKPOINT_VERSION``,
...) and ``fn.toml`` in the working directory, as for ``fn serve``; flags override both.

    FNSERVE_STORE=s3://models/checkpoints python -m fnserve.runtime /srv/functions/recs
    python -m fnserve.runtime functions/recs --port 0 --address-file /tmp/recs.json

With an address file (``--address-file`` or ``FNSERVE_ADDRESS_FILE``) the runtime writes
``{"url": ..., "pid": ...}`` there as soon as it listens, atomically (a reader sees the whole
object or no file): how the local target learns where a replica started on port 0 listens.
Bad input (a missing folder, a bad port, a broken function file) is one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fnserve.runtime.app import create_app
from fnserve.runtime.config import DEFAULT_PORT, FUNCTIONS_DIR
from fnserve.runtime.errors import FnError
from fnserve.runtime.loader import discover
from fnserve.runtime.redact import redact_text
from fnserve.runtime.server import bind_socket, run, serve
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings, settings_here

PROG = "python -m fnserve.runtime"
ADDRESS_FILE_ENV = "FNSERVE_ADDRESS_FILE"
STANDBY_ENV = "FNSERVE_STANDBY"
QUIET_LOGGERS = ("botocore", "s3fs", "aiobotocore", "fsspec", "urllib3", "httpx", "httpcore")
log = logging.getLogger("fnserve.runtime")


class StartError(FnError):
    """The runtime cannot start as asked (a bad flag); the message says why, in one line."""

    status = 400


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Parse, serve until SIGTERM, return the exit status (2: bad input, 1: cannot listen)."""
    timeline = {"process": process_started_at(), "runtime_imported": time.time()}
    environ = os.environ if environ is None else environ
    args = _parser(environ).parse_args(argv)  # a usage error exits 2 with argparse's one line
    _setup_logging()
    # Function files import TensorFlow, whose C++ INFO lines would bury ours; users can still opt in.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    try:
        settings = settings_here(environ, host=args.host, port=args.port, store=args.store)
    except ValueError as exc:  # a bad setting, named with where it came from
        return _fail(str(exc), 2)
    try:
        serve_functions(
            args.targets,
            settings,
            checkpoint_version=args.checkpoint_version,
            address_file=Path(args.address_file) if args.address_file else None,
            announce=_say,
            standby=args.standby,
            timeline=timeline,
        )
    except FnError as exc:  # a bad flag, a missing folder, a broken function file
        return _fail(exc.message, 2)
    except OSError as exc:  # cannot listen, cannot write the address file
        return _fail(str(exc), 1)
    return 0


def serve_functions(
    targets: Sequence[str | Path],
    settings: Settings,
    *,
    checkpoint_version: str | None = None,
    address_file: Path | None = None,
    announce: Callable[[str], object] = log.info,
    standby: bool = False,
    timeline: dict[str, float] | None = None,
) -> None:
    """Serve the functions in ``targets`` (default ``./functions``) until SIGTERM or Ctrl-C.

    Shared by this entry point and ``fn serve``, which passes its own ``announce``.
    ``checkpoint_version`` (a number or ``latest``) overrides each function's own choice.
    ``standby``: listen, fetch and import at once, but load the models only on SIGUSR1 (a warm
    pool's replica: a cold start then pays only for loading); ``timeline``: the start's steps so far.
    """
    if checkpoint_version and checkpoint_version != "latest" and not checkpoint_version.isdigit():
        raise StartError(f"checkpoint version must be a number or 'latest', got {checkpoint_version!r}")
    found = discover(targets or [settings.project_dir / FUNCTIONS_DIR])
    timeline = {**(timeline or {}), "function_imported": time.time()}
    versions = {f.spec.name: checkpoint_version for f in found} if checkpoint_version else None
    runtime = Runtime(found, settings, versions=versions, standby=standby, timeline=timeline)
    sock = bind_socket(settings.host, settings.port)
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        base = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
        if address_file is not None:
            write_address_file(address_file, base, os.getpid())
        doing = "standing by with" if standby else "loading"
        announce(f"fnserve: {doing} {len(found)} function(s), listening on {base}")

        def ready() -> None:
            for name, fn in runtime.functions.items():
                version = fn.loaded.version if fn.loaded else None
                announce(
                    f"  ready  {base}/function/{name}" + (f"  (checkpoint v{version})" if version else "")
                )
            announce(f"  dashboard  {base}/dashboard")

        run(serve(create_app(runtime), runtime, sock, on_ready=ready), settings.event_loop)
    finally:
        sock.close()
        if address_file is not None:  # a file left behind would name a port nobody listens on
            address_file.unlink(missing_ok=True)


def write_address_file(path: Path, url: str, pid: int) -> None:
    """Write ``{"url": url, "pid": pid}`` to ``path`` through a temporary file and a rename.

    The rename is atomic on one file system, so a reader polling ``path`` never sees half an
    object; the pid lets it tell this process's file from a stale one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{pid}.tmp")
    temporary.write_text(json.dumps({"url": url, "pid": pid}))
    os.replace(temporary, path)


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve function folders over HTTP with the fnserve runtime (what images run).",
        epilog="Settings not given as flags come from FNSERVE_* variables, then fn.toml here.",
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="FOLDER",
        help="function folders or predict.py files (default ./functions)",
    )
    parser.add_argument("--host", help="address to bind (FNSERVE_HOST; default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help=f"port to bind, 0 picks a free one (FNSERVE_PORT; default {DEFAULT_PORT})"
    )
    parser.add_argument("--store", help="checkpoint store URL (FNSERVE_STORE; default from fn.toml)")
    parser.add_argument(
        "--checkpoint-version",
        default=environ.get("FNSERVE_CHECKPOINT_VERSION") or None,
        help="serve this checkpoint version, a number or latest (FNSERVE_CHECKPOINT_VERSION)",
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        default=environ.get(STANDBY_ENV, "") in ("1", "true"),
        help=f"fetch and import now, load and serve on SIGUSR1: a warm pool's replica ({STANDBY_ENV}=1)",
    )
    parser.add_argument(
        "--address-file",
        default=environ.get(ADDRESS_FILE_ENV) or None,
        help=f"write {{url, pid}} as JSON here once listening ({ADDRESS_FILE_ENV})",
    )
    return parser


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {redact_text(message)}", file=sys.stderr)
    return status


def _say(line: str) -> None:
    """The lines ``fn serve`` prints, as it prints them (people and scripts read them)."""
    print(line, file=sys.stderr, flush=True)


def _setup_logging() -> None:
    """Plain lines on stderr: containers and the local target's log files keep them as they are."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def process_started_at() -> float:
    """When this process began (unix time), from the kernel's own count: ``/proc/self/stat``'s
    start time, in clock ticks since boot, against ``/proc/uptime``. The interpreter's start and
    every import before this line are part of a cold start too. Now, where there is no /proc."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return time.time()
    return time.time() - uptime_s + ticks / os.sysconf("SC_CLK_TCK")

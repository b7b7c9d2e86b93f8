"""``fn gateway``, ``fn deploy``, ``fn status``, ``fn scale``, ``fn split``, ``fn promote``,
``fn rollback``, ``fn logs``, ``fn delete``: thin, over :mod:`fnserve.gateway.control`."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table

from fnserve import deploy as library
from fnserve.cli import retraining
from fnserve.cli.common import console, load_settings, out, user_errors
from fnserve.gateway.control import Control, connect, running_target
from fnserve.gateway.platform import MAX_WARM_POOL
from fnserve.gateway.split import parse_weights
from fnserve.gateway.targets import TARGETS
from fnserve.project import DEFAULT_PORT
from fnserve.runtime.redact import scrub

target_option = click.option(
    "--target",
    type=click.Choice(sorted(TARGETS)),
    default=None,
    help="Where replicas run (default: [gateway] target).",
)
min_option = click.option(
    "--min", "min_replicas", type=click.IntRange(0), default=None, help="Fewest replicas (0: scale to zero)."
)
max_option = click.option(
    "--max", "max_replicas", type=click.IntRange(1), default=None, help="Most replicas."
)
idle_option = click.option(
    "--scale-to-zero-after", type=click.FloatRange(min=0, min_open=True), default=None, help="Idle seconds."
)
pool_option = click.option(
    "--warm-pool",
    type=click.IntRange(0, MAX_WARM_POOL),
    default=None,
    help="Standbys kept per version while it may scale to zero (default 1; 0: plain cold starts).",
)


def control(target: str | None = None) -> Control:
    return connect(load_settings(), target)


@click.command("gateway")
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option(
    "--port", type=int, default=None, help=f"Port to bind (default {DEFAULT_PORT}; 0 picks a free one)."
)
@target_option
@user_errors
def gateway_command(host: str | None, port: int | None, target: str | None) -> None:
    """Run the gateway: per-function URLs over the deployed functions' replicas.

    It serves the paths `fn serve` serves, balances over replicas, scales them (to zero when
    idle), splits traffic between versions, and has an admin API behind a token.

    \b
    Examples:
      fn gateway                             # local replicas, http://127.0.0.1:8080
      fn gateway --port 9000 --target local
    """
    from fnserve.gateway.server import run

    settings = load_settings(gateway_host=host, gateway_port=port, gateway_target=target)

    def ready(url: str, token: str, new_token: bool) -> None:
        console.print(f"fnserve gateway ({settings.gateway_target}): listening on {url}")
        console.print(f"  dashboard: {url}/dashboard")
        if new_token:
            console.print(f"  admin token (new, saved in .fnserve/gateway-token): {token}", soft_wrap=True)

    try:
        run(settings, settings.gateway_target, on_ready=ready)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("deploy")
@click.argument("name")
@target_option
@click.option("--version", default=None, help="Version label (default 1; a new label adds a version).")
@click.option(
    "--image", default=None, help="Image to run; locally, the function folder (default functions/NAME)."
)
@click.option("--checkpoint-version", default=None, help="Checkpoint the version serves: a number or latest.")
@click.option(
    "--weight", type=click.IntRange(0, 100), default=None, help="Share of traffic, 0-100 (new version: 0)."
)
@min_option
@max_option
@idle_option
@pool_option
@click.option(
    "--sticky-key", default=None, help="Header or query parameter that keeps a caller on one version."
)
@click.option(
    "--rollout/--no-rollout",
    default=None,
    help="New versions become candidates judged in stages ([rollout] of function.toml; default: "
    "on when it has one), or take their weight at once.",
)
@click.option(
    "--rollout-stages",
    default=None,
    metavar="STAGES",
    help="The rollout's stages, e.g. shadow:200,10:200,50:200,100 (requests per stage after ':').",
)
@click.option("--dry-run", is_flag=True, help="k8s: print the objects it would apply, apply nothing.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", help="With --dry-run.")
@user_errors
def deploy_command(name: str, target: str | None, image: str | None, **options: Any) -> None:
    """Deploy a function, add a version of it, or change one.

    With a kubeconfig (KUBECONFIG or ~/.kube/config) and no target configured, the target is k8s.

    \b
    Examples:
      fn deploy recs --min 0 --scale-to-zero-after 300       # functions/recs, version 1
      fn deploy recs --version 2 --checkpoint-version 7 --weight 10   # a canary
      fn deploy recs --target docker --image fnserve/recs:3f2a9c1b
      fn deploy recs --target k8s --dry-run -o yaml          # the Kubernetes objects, applied nowhere
    """
    scaling = {
        "min_replicas": options.pop("min_replicas"),
        "max_replicas": options.pop("max_replicas"),
        "scale_to_zero_after_s": options.pop("scale_to_zero_after"),
        "warm_pool": options.pop("warm_pool"),
    }
    scaling = {k: v for k, v in scaling.items() if v is not None}
    dry_run, output = options.pop("dry_run"), options.pop("output")
    settings = load_settings()
    if dry_run:
        options.pop("rollout"), options.pop("rollout_stages")  # the gateway's, not a Kubernetes object
        if library.resolve_target(settings, target or running_target(settings)) != "k8s":
            raise click.UsageError("--dry-run prints Kubernetes objects: use it with --target k8s")
        text = library.dry_run(settings, name, output=output, image=image, scaling=scaling, **options)
        click.echo(text, nl=False)
        return
    shown = library.deploy(
        settings, name, target=target, image=image, scaling=scaling, on_output=_say, **options
    )
    print_status([shown])


@click.command("status")
@click.argument("name", required=False)
@user_errors
def status_command(name: str | None) -> None:
    """Deployed functions: versions, weights, replicas, request rate, p99, last cold start.

    \b
    Examples:
      fn status
      fn status recs
    """
    state = control().status()
    functions = [f for f in state["functions"] if name is None or f["name"] == name]
    if name is not None and not functions:
        raise click.ClickException(f"no function named {name!r} is deployed")
    print_status(functions)


@click.command("scale")
@click.argument("name")
@min_option
@max_option
@idle_option
@pool_option
@click.option(
    "--target-in-flight", type=click.FloatRange(min=0, min_open=True), default=None, help="Per replica."
)
@user_errors
def scale_command(name: str, scale_to_zero_after: float | None, **changes: Any) -> None:
    """Change a function's scaling bounds (the gateway scales between them on load).

    \b
    Examples:
      fn scale recs --min 2 --max 8
      fn scale recs --min 0 --scale-to-zero-after 120
      fn scale recs --warm-pool 0       # no standby: every wake-up starts a process or container
    """
    print_status([control().scale(name, scale_to_zero_after_s=scale_to_zero_after, **changes)])


@click.command("split")
@click.argument("name")
@click.argument("weights", nargs=-1, required=True)
@user_errors
def split_command(name: str, weights: tuple[str, ...]) -> None:
    """Split traffic between versions by weight (they add up to 100); takes effect at once.

    \b
    Examples:
      fn split recs 3=90 4=10
      fn split recs 4=100
    """
    print_status([control().split(name, parse_weights(weights))])


@click.command("promote")
@click.argument("name")
@click.argument("version")
@user_errors
def promote_command(name: str, version: str) -> None:
    """Send all traffic to one version (`fn rollback` undoes it).

    \b
    Examples:
      fn promote recs 4
    """
    print_status([control().promote(name, version)])


@click.command("rollback")
@click.argument("name")
@user_errors
def rollback_command(name: str) -> None:
    """Go back to the split before the last change, from the next request on.

    \b
    Examples:
      fn rollback recs
    """
    print_status([control().rollback(name)])


@click.command("logs")
@click.argument("name")
@click.option("--tail", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Lines to show.")
@user_errors
def logs_command(name: str, tail: int) -> None:
    """Recent log lines of a function's replicas.

    \b
    Examples:
      fn logs recs --tail 20
    """
    for line in control().logs(name, tail):
        out.print(scrub(line), markup=False, highlight=False, soft_wrap=True)


@click.command("delete")
@click.argument("name")
@click.confirmation_option(prompt="Delete the function's replicas and deployment state?")
@user_errors
def delete_command(name: str) -> None:
    """Remove a deployed function: its replicas and its state.

    \b
    Examples:
      fn delete recs --yes
    """
    ctl = control()
    ctl.delete(name)
    out.print(f"deleted {name} through {ctl.via}")


def _say(line: str) -> None:
    out.print(scrub(line), markup=False, highlight=False, soft_wrap=True)


def cold_start_line(name: str, cold: dict[str, Any]) -> str:
    """The last cold start's parts, largest named first, e.g.
    ``recs cold start 0.84s (standby): load 0.41, warm_up 0.12, ...``.

    >>> cold_start_line("recs", {"total_s": 1.0, "standby": False, "load_s": 0.6, "start_s": 0.4})
    'recs cold start 1.00s: load 0.60s, start 0.40s'
    """
    parts = {k.removesuffix("_s"): v for k, v in cold.items() if k.endswith("_s") and k != "total_s"}
    shown = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 0.005)
    how = " (standby)" if cold.get("standby") else ""
    return f"{name} cold start {cold['total_s']:.2f}s{how}: {shown}"


def print_status(functions: list[dict[str, Any]]) -> None:
    table = Table("function", "version", "weight", "replicas", "req/s", "p99 ms", "last cold start")
    for f in functions:
        cold = f.get("last_cold_start")
        cold_text = f"{cold['total_s']:.2f}s (v{cold['version']}, {_ago(cold['at'])})" if cold else "-"
        for i, v in enumerate(f["versions"]):
            ready = "-" if v.get("ready") is None else v["ready"]
            first = i == 0
            table.add_row(
                f["name"] if first else "",
                v["version"],
                f"{v['weight']}%",
                f"{ready}/{v['desired']}" + (f" +{v['standby']} standby" if v.get("standby") else ""),
                _num(f.get("requests_per_s")) if first else "",
                _num(f.get("p99_ms")) if first else "",
                cold_text if first else "",
            )
    out.print(table)
    for f in functions:
        if cold := f.get("last_cold_start"):
            out.print(cold_start_line(f["name"], cold), markup=False, highlight=False)
    print_rollouts(functions)
    for line in (line for f in functions for line in retraining.lines(f)):  # [train] schedule
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def print_rollouts(functions: list[dict[str, Any]], *, events: int = 3) -> None:
    """Each function's rollout: its stage, the stage's evidence so far, the last decisions."""
    for f in functions:
        rollout = f.get("rollout")
        if not rollout:
            continue
        head = f"{f['name']}: rollout of version {rollout['candidate']} (stable {rollout['stable']}): "
        if rollout["status"] == "active":
            state = "paused, " if rollout["paused"] else ""
            head += f"{state}stage {rollout['stage_number']}/{rollout['stages']}, {rollout['stage_describe']}"
            window = rollout.get("window")
            if window:
                head += f"; {window['observations']} observed in {window['seconds']:g}s"
        else:
            head += f"{rollout['status']}: {rollout['reason']}"
        out.print(head, markup=False, highlight=False, soft_wrap=True)
        for entry in f.get("events", [])[-events:]:
            when = time.strftime("%H:%M:%S", time.localtime(entry["at"]))
            out.print(f"  {when}  {entry['message']}", markup=False, highlight=False, soft_wrap=True)


@click.command("rollout")
@click.argument("name")
@click.option("--pause", "action", flag_value="pause", help="Stop taking automatic steps (weights stay).")
@click.option(
    "--resume", "action", flag_value="resume", help="Take automatic steps again (the stage restarts)."
)
@click.option("--start", "candidate", default=None, metavar="VERSION", help="Roll out a deployed version.")
@click.option(
    "--events", type=click.IntRange(1, 50), default=10, show_default=True, help="Decisions to show."
)
@user_errors
def rollout_command(name: str, action: str | None, candidate: str | None, events: int) -> None:
    """A function's rollout: its stage, the evidence so far and every decision; pause or resume it.

    `fn promote NAME VERSION` and `fn rollback NAME` override it by hand.

    \b
    Examples:
      fn rollout recs                 # where it stands, and the last decisions
      fn rollout recs --pause
      fn rollout recs --resume
      fn rollout recs --start 2       # roll out deployed version 2 under the policy
    """
    if action and candidate:
        raise click.UsageError("--start cannot be combined with --pause/--resume")
    ctl = control()
    if action:
        shown = ctl.rollout(name, {"paused": action == "pause"})
    elif candidate:
        shown = ctl.rollout(name, {"candidate": candidate})
    else:
        found = [f for f in ctl.status()["functions"] if f["name"] == name]
        if not found:
            raise click.ClickException(f"no function named {name!r} is deployed")
        shown = found[0]
    if not shown.get("policy"):
        out.print(f"{name} has no rollout policy ([rollout] in function.toml): new versions take their share")
    elif not shown.get("rollout"):
        out.print(f"{name}: no rollout yet; a new checkpoint or version becomes the candidate")
    print_rollouts([shown], events=events)
    window = (shown.get("rollout") or {}).get("window")
    if window:
        out.print_json(data=window)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _ago(at: float) -> str:
    return f"{max(0, time.time() - at):.0f}s ago"


COMMANDS = [
    gateway_command,
    deploy_command,
    status_command,
    scale_command,
    split_command,
    promote_command,
    rollback_command,
    rollout_command,
    logs_command,
    delete_command,
]

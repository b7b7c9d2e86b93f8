"""``fn monitor``."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from fnserve.cli.common import out, url_option, user_errors
from fnserve.client import Client


@click.command("monitor")
@click.argument("name")
@url_option("is served (fn serve, a replica, or the gateway)")
@click.option(
    "--token",
    envvar="FNSERVE_GATEWAY_TOKEN",
    default=None,
    help="The gateway's admin token, for a gateway whose prediction routes need it (auth = token).",
)
@user_errors  # ClientError
def monitor_command(name: str, url: str, token: str | None) -> None:
    """Show each version's drift against its training reference, feature by feature.

    PSI and Jensen-Shannon distance of every input and output over the live window; a feature
    over its threshold is shown in bold red.

    \b
    Examples:
      fn monitor recs
      fn monitor recs --url http://127.0.0.1:8000     # through the gateway: replicas merged
    """
    with Client(url, headers={"Authorization": f"Bearer {token}"} if token else None) as client:
        doc = client.monitor(name)
    for version, entry in doc["functions"][name]["versions"].items():
        out.print(version_table(name, version, entry))
    if not doc["functions"][name]["versions"]:
        out.print(f"{name}: no version profiled yet" + _note(doc["functions"][name].get("note")))


def version_table(name: str, version: str, entry: dict[str, Any]) -> RenderableType:
    """One version's window and its features as a table (none without a reference); drifted rows
    in bold red."""
    window = entry["window"]
    heading = f"{name} v{version}: {window['samples']} instances (last {window['seconds']:g} s, at most "
    heading += f"{window['count']})" + _note(entry["note"])
    if not entry["features"]:
        return Text(heading)
    features = entry["features"]
    # One threshold for every feature (the usual case) goes into the header, else beside each score.
    psi_limits = {f["psi_threshold"] for f in features}
    js_limits = {f["js_threshold"] for f in features}
    psi_head = f"PSI>{psi_limits.pop():g}" if len(psi_limits) == 1 else "PSI/limit"
    js_head = f"JS>{js_limits.pop():g}" if len(js_limits) == 1 else "JS/limit"
    table = Table(pad_edge=False)
    table.add_column("feature", no_wrap=True)  # names are never cut; the figures give way
    table.add_column("role", no_wrap=True)
    shares = ("miss", "unkn", "dflt")  # shares of instances: missing, unknown to the reference, defaulted
    for column in (psi_head, js_head, *shares):
        table.add_column(column, justify="right")
    table.add_column("drift", no_wrap=True, min_width=len("DRIFTED"))  # the verdict is never cut
    one_limit = "/" not in psi_head and "/" not in js_head
    for f in features:
        table.add_row(
            f["name"],
            f"{_ROLES.get(f['role'], f['role'])}/{_TYPES.get(f['type'], f['type'])}",
            _score(f["psi"], None if one_limit else f["psi_threshold"]),
            _score(f["js"], None if one_limit else f["js_threshold"]),
            f"{f['missing_share']:.1%}",
            f"{f['unknown_share']:.1%}",
            f"{f.get('defaulted_share', 0.0):.1%}",  # a replica from before defaulted shares: none
            "DRIFTED" if f["drifted"] else "ok",
            style="bold red" if f["drifted"] else None,
        )
    return Group(Text(heading, style="bold"), table)


_ROLES = {"input": "in", "output": "out"}
_TYPES = {"numeric": "num", "categorical": "cat", "tensor": "tensor"}


def _score(value: float | None, threshold: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if threshold is None else f"{value:.3f} / {threshold:g}"


def _note(note: str | None) -> str:
    return f" — {note}" if note else ""


COMMANDS = [monitor_command]

"""``fn invoke``."""

from __future__ import annotations

import mimetypes
from pathlib import Path

import click
import orjson

from fnserve.cli.common import out, url_option, user_errors
from fnserve.client import Client


@click.command("invoke")
@click.argument("name")
@click.option(
    "-d", "--data", "pairs", multiple=True, metavar="KEY=VALUE", help="An input, as a query parameter."
)
@click.option(
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Send this file's bytes as the body (an image).",
)
@click.option(
    "--json", "json_body", default=None, help='Send this JSON body: one instance or {"instances": [...]}.'
)
@url_option("is served (fn serve, a container, or the gateway)")
@user_errors  # ClientError
def invoke_command(
    name: str, pairs: tuple[str, ...], file_: Path | None, json_body: str | None, url: str
) -> None:
    """Call a served function and print its prediction.

    \b
    Examples:
      fn invoke recs -d user_country=NL -d user_language=nl -d day_of_week=5 \\
                     -d season=winter -d hotel_price=129.0 -d hotel_id=4711
      fn invoke tagger --file photo.jpg
      fn invoke recs --json '{"instances": [{"user_country": "NL", ...}]}'
    """
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-d")
        params[key] = value
    if file_ is not None and json_body is not None:
        raise click.UsageError("give --file or --json, not both")
    with Client(url) as client:
        if file_ is not None:
            kind = mimetypes.guess_type(file_.name)[0] or "application/octet-stream"
            result = client.predict_bytes(name, file_.read_bytes(), kind, **params)
        elif json_body is not None:
            result = _post_json(client, name, json_body)
        else:
            result = client.predict(name, **params)
    out.print_json(orjson.dumps(result).decode())


def _post_json(client: Client, name: str, text: str) -> object:
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from None
    if isinstance(body, dict) and "instances" in body:
        return client.predict_batch(name, body["instances"])
    return client.predict_batch(name, [body])[0]


COMMANDS = [invoke_command]

"""``fn``: the command line. Thin: parse, call the library, print."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.logging import RichHandler

from fnserve import __version__
from fnserve.runtime.errors import FnError
from fnserve.runtime.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)  # progress and logs
out = Console()  # results, so they can be piped


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )
    for noisy in ("botocore", "s3fs", "aiobotocore", "fsspec", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(Path.cwd(), os.environ, overrides)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def user_errors(func: F) -> F:
    """Library errors become one-line CLI errors, not tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FnError as exc:
            raise click.ClickException(exc.message) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fnserve")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def cli(verbose: bool) -> None:
    """fnserve: write a @predict function, serve it, call it.

    \b
    Examples:
      fn serve                      # every function in ./functions on 127.0.0.1:8080
      fn train recs                 # train and publish a new checkpoint version
      fn invoke recs -d user_country=NL -d hotel_id=4711 ...
    """
    setup_logging(verbose)
    # Function files import TensorFlow, whose C++ INFO lines would bury ours; users can still opt in.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def register() -> None:
    from fnserve.cli import invoke, serve, train

    for module in (serve, train, invoke):
        for command in module.COMMANDS:
            cli.add_command(command)


register()

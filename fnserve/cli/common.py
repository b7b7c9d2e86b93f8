"""What every `fn` command shares: consoles, settings, turning library errors into CLI errors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.logging import RichHandler

from fnserve.runtime.errors import FnError
from fnserve.runtime.settings import Settings, settings_here

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
        return settings_here(**overrides)
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

"""What every `fn` command shares: consoles, settings, turning library errors into CLI errors."""

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

from fnserve.runtime.errors import FnError
from fnserve.runtime.redact import redact_text, register_secrets, scrub, secret_values
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
    """The project's settings; from here on this command's logs and errors hide their secrets
    (and the storage credentials of its environment)."""
    try:
        settings = Settings.load(Path.cwd(), os.environ, overrides)
    except ValueError as exc:
        raise click.ClickException(redact_text(str(exc))) from None
    register_secrets(settings.secrets() | secret_values(environ=os.environ))
    return settings


def user_errors(func: F) -> F:
    """Library errors become one-line CLI errors, not tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FnError as exc:
            raise click.ClickException(scrub(exc.message)) from None

    return wrapper  # type: ignore[return-value]

"""What every `fn` command shares: consoles, settings, turning library errors into CLI errors.

Every error fnserve raises on purpose is an :class:`~fnserve.runtime.errors.FnError`; this is the
one place that turns them (and the client's :class:`~fnserve.client.ClientError`) into messages.
"""

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

from fnserve import project
from fnserve.client.core import DEFAULT_URL, ClientError
from fnserve.project import ProjectSettings
from fnserve.runtime.errors import FnError
from fnserve.runtime.redact import redact_text, register_secrets, scrub, secret_values

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)  # progress and logs
out = Console()  # results, so they can be piped


def url_option(where: str) -> Callable[[F], F]:
    """``--url`` (or ``FNSERVE_URL``) of the commands that talk to a serving function; ``where``
    says which servers the command reaches."""
    return click.option(
        "--url",
        envvar="FNSERVE_URL",
        default=DEFAULT_URL,
        show_default=True,
        help=f"Where the function {where}.",
    )


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )
    for noisy in ("botocore", "s3fs", "aiobotocore", "fsspec", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_settings(**flags: Any) -> ProjectSettings:
    """The settings of the project in the working directory; ``flags`` are the command's options
    (``None``: not given), over the environment, over ``fn.toml``. From here on this command's
    logs and errors hide their secrets (and the storage credentials of its environment)."""
    try:
        settings = project.load_settings(Path.cwd(), os.environ, flags)
    except FnError as exc:
        raise click.ClickException(redact_text(exc.message)) from None
    register_secrets(settings.secrets() | secret_values(environ=os.environ))
    return settings


def cli_error(exc: FnError | ClientError) -> click.ClickException:
    """The one-line CLI error for a library error (a build's, the engine's, the platform's, ...).

    The client's errors stay outside :class:`FnError`: they are answers it received (``status``
    is the server's, 0 when unreachable), not errors with an HTTP status of their own. Either
    way the message shows no secret the command knows of."""
    return click.ClickException(scrub(exc.message if isinstance(exc, FnError) else str(exc)))


def user_errors(func: F) -> F:
    """Library errors become one-line CLI errors, not tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (FnError, ClientError) as exc:
            raise cli_error(exc) from None

    return wrapper  # type: ignore[return-value]

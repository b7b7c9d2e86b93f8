"""``fn``: the command line. Thin: parse, call the library, print."""

from __future__ import annotations

import os

import click

from fnserve import __version__
from fnserve.cli.common import console, load_settings, out, setup_logging, user_errors

__all__ = ["cli", "console", "load_settings", "out", "user_errors"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fnserve")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def cli(verbose: bool) -> None:
    """fnserve: write a @predict function, serve it, call it.

    \b
    Examples:
      fn new fare                   # functions/fare: predict.py, train.py, function.toml, a test
      fn serve                      # every function in ./functions on 127.0.0.1:8080
      fn train recs                 # train and publish a new checkpoint version
      fn invoke recs -d user_country=NL -d hotel_id=4711 ...
    """
    setup_logging(verbose)
    # Function files import TensorFlow, whose C++ INFO lines would bury ours; users can still opt in.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def register() -> None:
    from fnserve.cli import (
        batch,
        bench,
        build,
        deploy,
        invoke,
        monitor,
        new,
        optimize,
        precompute,
        serve,
        train,
    )

    for module in (new, serve, train, optimize, precompute, invoke, batch, monitor, bench, build, deploy):
        for command in module.COMMANDS:
            cli.add_command(command)


register()

"""``python -m fnserve.cli`` is ``fn``."""

from fnserve.cli.main import cli

cli()

"""``fn new``."""

from __future__ import annotations

import click

from fnserve.cli.common import console, load_settings, out, user_errors
from fnserve.scaffold import TEMPLATES, create_function, default_template


@click.command("new")
@click.argument("name")
@click.option(
    "--template",
    type=click.Choice(TEMPLATES),
    default=None,
    help="tensorflow (a Keras model) or python (NumPy only).  "
    "[default: tensorflow where TensorFlow is installed, else python]",
)
@user_errors
def new_command(name: str, template: str | None) -> None:
    """Create functions/NAME: predict.py, train.py, function.toml and a test, ready to train and serve.

    The generated function trains on generated data in seconds; replace its inputs and its model
    with yours. NAME is its URL, /function/NAME. An existing folder is never written into.

    \b
    Examples:
      fn new fare                     # tensorflow where it is installed, else python
      fn new fare --template python   # a NumPy model: no TensorFlow needed
      fn train fare && fn serve       # then: curl 'http://127.0.0.1:8080/function/fare?x=2&category=b'
      pytest functions/fare           # its test
    """
    settings = load_settings()
    chosen = template or default_template()
    folder = create_function(settings.project_dir, name, chosen)
    if template is None:
        reason = (
            "TensorFlow is installed here" if chosen == "tensorflow" else "TensorFlow is not installed here"
        )
        console.print(f"template {chosen} ({reason}; --template chooses)")
    where = folder.relative_to(settings.project_dir)
    out.print(f"created {where}/ from the {chosen} template:")
    for path in sorted(folder.iterdir()):
        out.print(f"  {where / path.name}")
    out.print(f"next: fn train {name} && fn serve; pytest {where}")


COMMANDS = [new_command]

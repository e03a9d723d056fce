"""The ``glmdata`` command: one module per command over :mod:`glmdata.cli.common`, which holds the
app, the errors and exit codes and the options the commands share. Data goes to stdout, people
read stderr."""

from __future__ import annotations

import signal
import sys

from glmdata.cli import convert, install_template, render, schema, split, stats, tokenize, validate
from glmdata.cli.common import Terminated, app, err, install_signal_handlers, open_std_streams, stdout_closed

__all__ = ["app", "main"]

# In the order `glmdata --help` lists them.
app.command()(convert.convert)
app.command()(validate.validate)
app.command()(schema.schema)
app.command()(render.render)
app.command("install-template")(install_template.install_template)
app.command()(stats.stats)
app.command()(split.split)
app.command()(tokenize.tokenize)


def main() -> None:
    """Console-script entry point."""
    open_std_streams()
    install_signal_handlers()
    try:
        app()
    except KeyboardInterrupt as exc:  # pragma: no cover - raised outside a command body
        err.print("[red]interrupted[/]")
        sys.exit(128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT))
    except OSError as exc:  # raised outside a command body: --help to a closed stdout
        if not stdout_closed(exc):
            raise
        sys.exit(2)

"""The command line: ``python -m service <command>``, installed as ``sklearn-server``; a thin shell over the core modules.

One module per command group; every command exits 0 on success and non-zero with a one-line
reason on stderr otherwise. Warnings the core logs on the way (an audit record that could not be
written) are held back and shown after a command that succeeded; after a failure the one-line
reason is all that is printed. ``LOG_LEVEL`` set shows every log line as it happens, as JSON.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

import click

from service.cli import (
    audit,
    backup,
    card,
    erase,
    export,
    labels,
    models,
    monitoring,
    registry,
    retrain,
    rollout,
    score,
    serve,
    settings,
)
from service.cli.keys import keys


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Package, inspect and serve scikit-learn models."""
    audit.record_cli_changes(ctx)


cli.add_command(keys)
for _module in (models, labels, rollout, registry, monitoring, settings, card, audit, export, erase, backup, score, serve,
                retrain):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


class _HeldWarnings(logging.Handler):
    """Keep the core's warnings until the command's outcome is known."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"warning: {record.getMessage()}")


def main() -> None:
    """Run the command line: ``python -m service``, or the installed ``sklearn-server`` (the same group)."""
    program = "python -m service" if sys.argv[0].endswith("__main__.py") else os.path.basename(sys.argv[0])
    try:
        if os.environ.get("LOG_LEVEL"):
            from service.logs import configure_logging

            configure_logging(os.environ["LOG_LEVEL"])
            cli(prog_name=program)
            return
        held = _HeldWarnings()
        logging.getLogger().addHandler(held)
        try:
            cli(prog_name=program)
        except SystemExit as exit_:
            if exit_.code in (0, None):
                for line in dict.fromkeys(held.lines):  # each warning once
                    print(line, file=sys.stderr)
            raise
    finally:
        # the process ends here: the collection the interpreter runs at exit would walk every object scikit-learn,
        # scipy and pandas made at import (a few tenths of a CPU second after a score run); frozen, they are skipped
        gc.freeze()

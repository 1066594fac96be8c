"""The command line: ``python -m service <command>``; a thin shell over the core modules.

One module per command group; every command exits 0 on success and non-zero with a one-line
reason on stderr otherwise.
"""

from __future__ import annotations

import click

from service.cli import audit, card, export, labels, models, monitoring, registry, rollout, settings
from service.cli.keys import keys


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Package, inspect and serve scikit-learn models."""
    audit.record_cli_changes(ctx)


cli.add_command(keys)
for _module in (models, labels, rollout, registry, monitoring, settings, card, audit, export):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="python -m service")

"""``compare``, ``report`` and ``purge``: what the server recorded, from the command line.

Reads the same database the server writes (``DATABASE_URL``), so it sees every worker's and
every replica's traffic.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from service import artifacts, comparison
from service.cli_common import ARTIFACTS, fails_cleanly
from service.store import Store

DATABASE = click.option("--database-url", envvar="DATABASE_URL", default="sqlite:///var/predictions.db",
                        show_default=True, help="The server's database (env DATABASE_URL).")


@click.command()
@click.argument("name")
@click.option("--window", "window_seconds", type=click.IntRange(1, 30 * 24 * 3600), default=300, show_default=True,
              help="Seconds of traffic to compare.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@ARTIFACTS
@DATABASE
@fails_cleanly
def compare(name: str, window_seconds: int, as_json: bool, artifacts_dir: Path, database_url: str) -> None:
    """Compare NAME's versions side by side: traffic, errors, latency, predictions, shadows."""
    artifacts.check_model_name(name)
    if not artifacts.list_versions(artifacts_dir, name):
        raise ValueError(f"no model {name!r} under {artifacts_dir}")
    figures = comparison.compare(Store.from_url(database_url), artifacts_dir, name, window_seconds)
    click.echo(json.dumps(figures, indent=2) if as_json else comparison.format_table(figures))


COMMANDS = (compare,)

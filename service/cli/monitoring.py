"""``compare``, ``report`` and ``purge``: what the server recorded, from the command line.

Reads the same database the server writes (``DATABASE_URL``), so it sees every worker's and
every replica's traffic.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from service.cli.common import ARTIFACTS, MODEL, fails_cleanly, setting
from service.models import comparison
from service.store import Store

DATABASE = click.option("--database-url", envvar="DATABASE_URL", default=setting("database_url"),
                        show_default=True, help="The server's database (env DATABASE_URL).")


@click.command()
@MODEL
@click.option("--window", "window_seconds", type=click.IntRange(1, 30 * 24 * 3600), default=300, show_default=True,
              help="Seconds of traffic to compare.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@ARTIFACTS
@DATABASE
@fails_cleanly
def compare(name: str, window_seconds: int, as_json: bool, artifacts_dir: Path, database_url: str) -> None:
    """Compare NAME's versions side by side: traffic, errors, latency, predictions, shadows."""
    figures = comparison.compare(Store.from_url(database_url), artifacts_dir, name, window_seconds)
    click.echo(json.dumps(figures, indent=2) if as_json else comparison.format_table(figures))


@click.command()
@click.option("--older-than-days", type=click.FloatRange(min=0), envvar="RETENTION_DAYS", default=setting("retention_days"),
              show_default=True, help="Delete records older than this (env RETENTION_DAYS).")
@DATABASE
@fails_cleanly
def purge(older_than_days: float, database_url: str) -> None:
    """Delete logged predictions, feedback, requests and shadow comparisons past the retention age."""
    deleted = Store.from_url(database_url).purge(older_than_days * 86400)
    click.echo(", ".join(f"{table}: {count} deleted" for table, count in deleted.items()))


@click.command()
@MODEL
@click.option("--window", type=click.IntRange(10, 100_000), envvar="MONITORING_WINDOW", default=setting("monitoring_window"),
              show_default=True,
              help="Predictions per version to look at.")
@click.option("--minutes", type=click.IntRange(1, 7 * 24 * 60), default=None,
              help="Look at every prediction of the last N minutes instead of the last --window predictions.")
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON report.")
@ARTIFACTS
@DATABASE
@fails_cleanly
def report(name: str, window: int, minutes: int | None, as_json: bool, artifacts_dir: Path, database_url: str) -> None:
    """Print NAME's monitoring report: traffic, drift, data quality, live performance, bias, alerts."""
    from service.monitoring.alerts import AlertManager, load_rules
    from service.monitoring.predlog import PredictionLog
    from service.monitoring.report import Monitoring
    from service.monitoring.text_report import format_report
    from service.serving.catalog import Catalog

    if minutes is not None and click.get_current_context().get_parameter_source("window").name != "DEFAULT":
        raise click.UsageError("give --window (predictions) or --minutes, not both")
    catalog = Catalog(artifacts_dir)
    catalog.refresh()
    store = Store.from_url(database_url)
    monitoring = Monitoring(catalog, PredictionLog(store), window, AlertManager(store, load_rules(None)))
    result = monitoring.model_report(name, window, minutes)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))


COMMANDS = (compare, purge, report)

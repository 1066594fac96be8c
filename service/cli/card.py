"""``card``: print a version's model card as Markdown, from the artifacts and the server's database."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import ARTIFACTS, MODEL, fails_cleanly, setting
from service.cli.monitoring import DATABASE


@click.command()
@MODEL
@click.argument("version", required=False, type=click.IntRange(min=1))
@ARTIFACTS
@DATABASE
@fails_cleanly
def card(name: str, version: int | None, artifacts_dir: Path, database_url: str) -> None:
    """Print the model card of NAME's VERSION (the production version when omitted) as Markdown."""
    from service.models import registry
    from service.monitoring.card import build_card
    from service.monitoring.card_text import markdown
    from service.monitoring.predlog import PredictionLog
    from service.monitoring.report import Monitoring
    from service.serving.catalog import Catalog
    from service.store import Store

    if version is None:
        version = registry.read_state(artifacts_dir, name)["labels"].get(registry.PRODUCTION)
        if version is None:
            raise ValueError(f"model {name!r} has no production label; name a version")
    catalog = Catalog(artifacts_dir)
    catalog.refresh()
    monitoring = Monitoring(catalog, PredictionLog(Store.from_url(database_url)), setting("monitoring_window"))
    click.echo(markdown(build_card(monitoring, artifacts_dir, name, version)), nl=False)


COMMANDS = (card,)

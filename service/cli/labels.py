"""Commands over labels and the change history."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import ARTIFACTS, MODEL, SIGNING_KEY, actor, escape, fails_cleanly
from service.models import registry


@click.group()
def label() -> None:
    """Point labels (production, staging, ...) at versions."""


@label.command("set")
@MODEL
@click.argument("label_name", metavar="LABEL")
@click.argument("version", type=int)
@click.option("--reason", default="", help="Why; recorded in the history.")
@click.option("--force", is_flag=True, help="Move the label to a version whose task, classes or features differ.")
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def label_set(name: str, label_name: str, version: int, reason: str, force: bool, artifacts_dir: Path,
              signing_key: str | None) -> None:
    """Point LABEL of NAME at VERSION (refused when that version fails verification or changes meaning)."""
    entry = registry.set_label(artifacts_dir, name, label_name, version, actor=actor(), reason=reason,
                               signing_key=signing_key, force=force)
    click.echo(f"{name}: {label_name} -> {version} (was {entry['previous']})")


@label.command("remove")
@MODEL
@click.argument("label_name", metavar="LABEL")
@click.option("--reason", default="", help="Why; recorded in the history.")
@ARTIFACTS
@fails_cleanly
def label_remove(name: str, label_name: str, reason: str, artifacts_dir: Path) -> None:
    """Remove LABEL from NAME."""
    entry = registry.remove_label(artifacts_dir, name, label_name, actor=actor(), reason=reason)
    click.echo(f"{name}: removed {label_name} (was {entry['previous']})")


@click.command()
@MODEL
@ARTIFACTS
@fails_cleanly
def history(name: str, artifacts_dir: Path) -> None:
    """Print the change history of NAME, oldest first."""
    for entry in registry.read_state(artifacts_dir, name)["history"]:
        what = " ".join(f"{k}={entry[k]}" for k in HISTORY_FIELDS if entry.get(k) not in (None, [], ""))
        click.echo(escape(f"{entry['at']}  {entry['actor']:<20} {entry['action']:<18} {what}  "
                          f"{entry.get('reason', '')}".rstrip()))


HISTORY_FIELDS = ("label", "version", "previous", "from", "to", "deleted", "previous_weight")


COMMANDS = (label, history)

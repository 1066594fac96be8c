"""Commands that check and repair a model's registry.json from its last-good copy."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.common import ARTIFACTS, MODEL, actor, fails_cleanly, model_argument
from service.errors import RegistryUnreadable
from service.models import artifacts, registry
from service.models.registry_file import read_last_good


@click.group("registry")
def registry_group() -> None:
    """Check and repair registry.json (labels, rollout, history) of each model."""


@registry_group.command("check")
@model_argument(required=False)
@ARTIFACTS
@fails_cleanly
def check(name: str | None, artifacts_dir: Path) -> None:
    """Say whether each model's registry.json reads (all models, or NAME); exit 1 if one does not."""
    names = [artifacts.check_model_name(name)] if name else artifacts.list_models(artifacts_dir)
    broken = []
    for model in names:
        try:
            registry.read_state(artifacts_dir, model)
        except RegistryUnreadable as exc:
            broken.append(model)
            click.echo(f"{model}: unreadable: {exc.reason}; {_fix(artifacts_dir, model)}")
        else:
            click.echo(f"{model}: ok")
    if broken:
        raise click.ClickException(f"unreadable registry state: {', '.join(broken)}")


@registry_group.command("restore")
@MODEL
@click.option("--reason", default="", help="Why; recorded in the history.")
@ARTIFACTS
@fails_cleanly
def restore(name: str, reason: str, artifacts_dir: Path) -> None:
    """Replace an unreadable registry.json of NAME with its last-good copy (the broken file is kept aside)."""
    entry = registry.restore(artifacts_dir, name, actor=actor(), reason=reason)
    labels = registry.read_state(artifacts_dir, name)["labels"]
    kept = f"; the broken file is kept as {entry['kept']}" if entry["kept"] else ""
    shown = ", ".join(f"{label}={version}" for label, version in labels.items()) or "none"
    click.echo(f"{name}: restored from the last-good copy (labels: {shown}){kept}")


def _fix(root: Path, name: str) -> str:
    try:
        read_last_good(root, name)
    except RegistryUnreadable:
        return "no last-good copy: repair registry.json by hand"
    return f"restore it with `python -m service registry restore {name}`"


COMMANDS = (registry_group,)

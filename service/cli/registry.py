"""Commands that check registry.json (readable, and the content the audit trail anchors) and
resolve what they find: ``restore`` from the last-good copy, ``accept`` a deliberate edit, or
``adopt`` artifacts packaged with another store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from service.cli.common import (
    ARTIFACTS,
    MODEL,
    SIGNING_KEY,
    actor,
    escape,
    existing_model,
    fails_cleanly,
    model_argument,
)
from service.config import Config
from service.errors import RegistryUnreadable
from service.models import artifacts, registry, registry_adopt, registry_anchor
from service.models.registry_file import read_last_good


@click.group("registry")
def registry_group() -> None:
    """Check and repair registry.json (labels, rollout, history) of each model."""


@registry_group.command("check")
@model_argument(required=False)
@ARTIFACTS
@fails_cleanly
def check(name: str | None, artifacts_dir: Path) -> None:
    """Say whether each model's registry.json reads and matches the audit trail (all models, or NAME);
    exit 1 if one does not."""
    names = [artifacts.check_model_name(name)] if name else artifacts.list_models(artifacts_dir)
    unreadable, refused, store = [], [], None
    for model in names:
        try:
            registry.read_state(artifacts_dir, model)
        except RegistryUnreadable as exc:
            unreadable.append(model)
            click.echo(f"{model}: unreadable: {exc.reason}; {_fix(artifacts_dir, model)}")
            continue
        try:
            store = store or _store()
            found = registry_anchor.verdict(store, artifacts_dir, model)
        except Exception as exc:  # the file reads; whether it is the audited one is unknown
            refused.append(model)
            click.echo(f"{model}: cannot be checked against the audit trail: {type(exc).__name__}: {escape(exc)}")
            continue
        if found.ok:
            click.echo(f"{model}: ok")
        else:
            refused.append(model)
            click.echo(f"{model}: refused: {found.said}; {found.fix}")
    problems = [f"{what}: {', '.join(models)}" for what, models in (("unreadable registry state", unreadable),
                                                                    ("registry state not audited", refused)) if models]
    if problems:
        raise click.ClickException("; ".join(problems))


@registry_group.command("restore")
@MODEL
@click.option("--reason", default="", help="Why; recorded in the history.")
@ARTIFACTS
@fails_cleanly
def restore(name: str, reason: str, artifacts_dir: Path) -> None:
    """Replace an unreadable or refused registry.json of NAME with its last-good copy (the file is kept aside)."""
    entry = registry.restore(artifacts_dir, name, actor=actor(), reason=reason)
    labels = registry.read_state(artifacts_dir, name)["labels"]
    kept = f"; the broken file is kept as {entry['kept']}" if entry["kept"] else ""
    shown = ", ".join(f"{label}={version}" for label, version in labels.items()) or "none"
    click.echo(f"{name}: restored from the last-good copy (labels: {shown}){kept}")


@registry_group.command("accept")
@MODEL
@click.option("--reason", required=True, help="Why registry.json was edited by hand; recorded in the history.")
@ARTIFACTS
@fails_cleanly
def accept(name: str, reason: str, artifacts_dir: Path) -> None:
    """Record a registry.json of NAME that was edited on purpose as the audited state (servers then serve it)."""
    entry = registry.accept(artifacts_dir, name, actor=actor(), reason=reason)
    shown = ", ".join(f"{label}={version}" for label, version in entry["labels"].items()) or "none"
    click.echo(f"{name}: accepted as edited and recorded in the audit trail (labels: {shown})")


@registry_group.command("adopt")
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True, help="Adopt every model made with another audit trail.")
@click.option("--reason", default="", help="Why (where the artifacts come from); recorded in the history.")
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def adopt(name: str | None, every: bool, reason: str, artifacts_dir: Path, signing_key: Any) -> None:
    """Adopt NAME's (or --all) artifacts packaged with another store: verify them (signatures with
    MODEL_TRUSTED_KEYS, else sha256) and record their arrival in this store's audit trail."""
    if bool(name) == every:
        raise click.UsageError("give a model NAME or --all")
    names = artifacts.list_models(artifacts_dir) if every else [existing_model(artifacts_dir, name or "")]
    adopted = 0
    for model in names:
        try:
            entry = registry_adopt.adopt(artifacts_dir, model, actor=actor(), reason=reason, keys=signing_key)
        except ValueError as exc:
            if not every:
                raise
            click.echo(f"{model}: skipped: {escape(exc)}")
            continue
        adopted += 1
        click.echo(f"{model}: adopted {len(entry['adopted'])} history entries up to {entry['head'][:12]}, "
                   f"{len(entry['versions'])} version(s) checked by {entry['checked']}")
    if every:
        click.echo(f"adopted {adopted} model(s)")


def _store() -> Any:
    from service.store import Store

    return Store.from_url(Config.from_env().database_url)


def _fix(root: Path, name: str) -> str:
    try:
        read_last_good(root, name)
    except RegistryUnreadable:
        return "no last-good copy: repair registry.json by hand"
    return f"restore it with `python -m service registry restore {name}`"


COMMANDS = (registry_group,)

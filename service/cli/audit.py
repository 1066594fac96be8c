"""``audit verify`` and ``audit export``: check and hand over the hash-chained audit trail.

Also ``record_cli_changes``: the registry changes a command makes (labels, rollout, gc, ...)
are recorded in the same trail as the admin API's, in the store ``DATABASE_URL`` names.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import click

from service.cli.common import ARTIFACTS, actor, escape, fails_cleanly
from service.config import Config
from service.models import registry_anchor
from service.security import audit as trail


def _store() -> Any:
    from service.store import Store

    return Store.from_url(Config.from_env().database_url)


def record_cli_changes(ctx: click.Context) -> None:
    """Record this command's registry changes in the audit trail, and check each registry.json it
    changes against it (the store opens on the first one)."""
    ctx.with_resource(registry_anchor.registry_changes(functools.cache(_store)))


def record(action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """Record one action of the person at the keyboard; say so on stderr when the store cannot take it."""
    try:
        trail.record(_store(), actor(), action, target, details)
    except Exception as exc:  # the action itself is done; the operator must know it is unaudited
        click.echo(f"warning: not recorded in the audit trail: {type(exc).__name__}: {exc}", err=True)


@click.group("audit")
def audit() -> None:
    """Check and export the audit trail (in the store DATABASE_URL names)."""


@audit.command("verify")
@ARTIFACTS
@fails_cleanly
def verify(artifacts_dir: Path) -> None:
    """Check every record's hash and position, and each registry.json against the chain; exit 1 on a break."""
    store = _store()
    check = trail.verify(store)
    if not check.ok:
        raise click.ClickException(f"audit chain broken at record {check.broken_seq}: {check.reason} "
                                   f"({check.count} record(s) before it are intact)")
    click.echo(f"audit chain intact: {check.count} record(s), head {check.head}")
    problems = registry_anchor.check_registry(store, artifacts_dir)
    for problem in problems:
        click.echo(f"registry: {escape(problem)}")
    if problems:
        raise click.ClickException(f"{len(problems)} registry.json disagreement(s) with the audit chain")


@audit.command("export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write, one JSON object per line ('-' for stdout).")
@fails_cleanly
def export(out: Path) -> None:
    """Write every audit record as JSON lines, oldest first, for an auditor."""
    store = _store()
    if str(out) == "-":
        count = trail.export(store, sys.stdout)
    else:
        with open(out, "w", encoding="utf-8") as fh:
            count = trail.export(store, fh)
    click.echo(f"exported {count} audit record(s)", err=True)


COMMANDS = (audit,)

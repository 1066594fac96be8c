"""``audit verify`` and ``audit export``: check and hand over the hash-chained audit trail;
``audit checkpoint`` (and ``checkpoint-keygen``): anchor its head outside the database.

Also ``record_cli_changes``: the registry changes a command makes (labels, rollout, gc, ...)
are recorded in the same trail as the admin API's, in the store ``DATABASE_URL`` names.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import click

from service.cli.common import ARTIFACTS, actor, escape, fails_cleanly, setting
from service.config import Config
from service.errors import ConfigError
from service.models import registry_anchor
from service.security import audit as trail
from service.security import checkpoint, signing


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


CHECKPOINTS = click.option("--checkpoints", "checkpoint_file", envvar="AUDIT_CHECKPOINT_FILE",
                           default=setting("audit_checkpoint_file"), show_default=True,
                           type=click.Path(dir_okay=False, path_type=Path),
                           help="Signed checkpoints of the chain head (env AUDIT_CHECKPOINT_FILE).")
CHECKPOINT_KEY = click.option("--key", "key_file", envvar="AUDIT_CHECKPOINT_KEY_FILE", default=None,
                              type=click.Path(dir_okay=False, path_type=Path),
                              help="Checkpoint private key (env AUDIT_CHECKPOINT_KEY_FILE).")


@audit.command("verify")
@ARTIFACTS
@CHECKPOINTS
@CHECKPOINT_KEY
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Public key checkpoints are checked with (default: the key file's .pub).")
@fails_cleanly
def verify(artifacts_dir: Path, checkpoint_file: Path, key_file: Path | None, public_key: Path | None) -> None:
    """Check every record's hash and position, the chain against its signed checkpoints, and each
    registry.json against the chain; exit 1 on a break."""
    store = _store()
    check = trail.verify(store)
    if not check.ok:
        raise click.ClickException(f"audit chain broken at record {check.broken_seq}: {check.reason} "
                                   f"({check.count} record(s) before it are intact)")
    click.echo(f"audit chain intact: {check.count} record(s), head {check.head}")
    public = public_key or (checkpoint.public_path(key_file) if key_file else None)
    try:
        coverage = checkpoint.check(store, checkpoint_file, checkpoint.load_public_key(public) if public else None)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if not coverage.ok:
        raise click.ClickException(coverage.problem)
    click.echo(coverage.describe())
    problems = registry_anchor.check_registry(store, artifacts_dir)
    for problem in problems:
        click.echo(f"registry: {escape(problem)}")
    if problems:
        raise click.ClickException(f"{len(problems)} registry.json disagreement(s) with the audit chain")


@audit.command("checkpoint-keygen")
@click.option("--out", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file to create (mode 0600); the public key is written beside it (.pub).")
@fails_cleanly
def checkpoint_keygen(key_file: Path) -> None:
    """Make the Ed25519 key that signs audit checkpoints (AUDIT_CHECKPOINT_KEY_FILE); it signs nothing else."""
    try:
        public, kid = checkpoint.generate(key_file)
    except FileExistsError:
        raise click.ClickException(f"{key_file} exists; it is never overwritten") from None
    click.echo(kid)
    click.echo(f"Private key {key_file} (mode 0600): AUDIT_CHECKPOINT_KEY_FILE. Public key {public}: "
               "give it to whoever verifies (audit verify --public-key).", err=True)


@audit.command("checkpoint")
@CHECKPOINTS
@CHECKPOINT_KEY
@fails_cleanly
def checkpoint_now(checkpoint_file: Path, key_file: Path | None) -> None:
    """Verify the chain and append a signed checkpoint of its head to the checkpoint file."""
    if key_file is None:
        raise click.ClickException("no checkpoint key: set AUDIT_CHECKPOINT_KEY_FILE (make one with "
                                   "`python -m service audit checkpoint-keygen --out FILE`)")
    try:
        point = checkpoint.write(_store(), signing.load_private_key(key_file), checkpoint_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if point is None:
        click.echo("the newest checkpoint already covers the chain's head")
    else:
        click.echo(f"checkpoint of records 1\u2013{point.seq} (head {point.head}) written to {checkpoint_file}")


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

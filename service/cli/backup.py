"""``backup DEST`` and ``restore SRC``: a consistent online snapshot of the deployment, and putting
one back on a fresh host (``service.backup``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from service.cli.audit import CHECKPOINTS
from service.cli.common import ARTIFACTS, actor, fails_cleanly
from service.cli.monitoring import DATABASE
from service.config import Config
from service.errors import ConfigError
from service.security import signing

#: Niceness of a backup: the server on the same host answers first.
NICENESS = 10


def _config() -> Config:
    try:
        return Config.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _record(url: str, action: str, target: str, details: dict[str, Any], *, finished: float | None = None) -> None:
    """Record the operator's backup or restore in the trail of the store it read or wrote (and, for a
    backup, when it ``finished``: the age /metrics shows)."""
    from service.backup import take
    from service.security import audit
    from service.store import Store

    store = Store.from_url(url)
    try:
        audit.record(store, actor(), action, target, details)
        if finished is not None:
            take.mark_done(store, finished)
    except Exception as exc:  # the backup is made; the operator must know it is unaudited
        click.echo(f"warning: not recorded in the store: {type(exc).__name__}: {exc}", err=True)
    finally:
        store.close()


def _keys_files(config: Config) -> dict[str, Path | None]:
    return {"api-keys": config.api_keys_file, "local-admin-keys": config.local_admin_keys_file}


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--include-secrets", is_flag=True,
              help="Also copy the API keys files, PII_HASH_KEY and the store's subject-hashing key (README: Backup).")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Then delete all but the N newest backups in DEST.")
@ARTIFACTS
@DATABASE
@CHECKPOINTS
@fails_cleanly
def backup(dest: Path, include_secrets: bool, keep: int | None, artifacts_dir: Path, database_url: str,
           checkpoint_file: Path) -> None:
    """Write a consistent snapshot of the artifacts, registries, audit checkpoints and store into a new
    folder under DEST, while serving goes on; print its path."""
    from service.backup import take

    config = _config()
    try:
        verify = signing.model_keys(config.signing_key, config.trusted_keys)
        sign = signing.model_keys(private_key_file=config.backup_signing_key_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    os.nice(max(0, NICENESS - os.nice(0)))  # once, however often it is called in one process
    sources = take.Sources(artifacts_dir, database_url, checkpoint_file, _keys_files(config), config.pii_hash_key)
    taken = take.take(dest, sources, include_secrets=include_secrets, verify_keys=verify, sign_keys=sign, keep=keep)
    for name, model in taken.manifest["models"].items():
        for version, reason in model["skipped"].items():
            click.echo(f"warning: {name} version {version} left out: {reason}", err=True)
    signed = "signed" if "signature" in taken.manifest else "unsigned"
    click.echo(f"backup {taken.path}: {len(taken.manifest['files'])} files, {taken.size / 2**20:.1f} MiB, "
               f"audit head {taken.manifest['audit']['seq']}, {signed}, {taken.seconds:.1f} s", err=True)
    for path in taken.removed:
        click.echo(f"removed {path} (--keep {keep})", err=True)
    # after the snapshot: the backup's own chain ends before this record
    _record(database_url, "backup.create", f"backup:{taken.path.name}", {"audit_seq": taken.manifest["audit"]["seq"],
                                                          "secrets": include_secrets, "signed": signed == "signed"},
            finished=time.time())
    click.echo(str(taken.path))


@click.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Restore over models, rows and checkpoints the target already holds.")
@ARTIFACTS
@DATABASE
@CHECKPOINTS
@fails_cleanly
def restore(src: Path, force: bool, artifacts_dir: Path, database_url: str, checkpoint_file: Path) -> None:
    """Verify the backup SRC (or the newest in a folder of backups) and restore it onto an empty
    ARTIFACTS_DIR and store; the target's servers must be stopped."""
    from service.backup import restore as restoring

    config = _config()
    try:
        trusted = signing.model_keys(trusted=config.backup_trusted_keys)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    target = restoring.Target(artifacts_dir, database_url, checkpoint_file, _keys_files(config), config.pii_hash_key)
    done = restoring.restore(src, target, trusted=trusted, force=force)
    for note in done.notes:
        click.echo(f"note: {note}", err=True)
    # after the checks: the restored chain goes on from the backup's head with who restored it
    _record(database_url, "backup.restore", f"backup:{done.source.name}", {"audit_seq": done.manifest["audit"]["seq"],
                                                            "created_at": done.manifest.get("created_at")})
    labels = "; ".join(f"{name}: " + (", ".join(f"{k}={v}" for k, v in model["labels"].items()) or "no labels")
                       for name, model in done.manifest["models"].items())
    click.echo(f"restored {done.source} (audit head {done.manifest['audit']['seq']}; {labels})")


COMMANDS = (backup, restore)

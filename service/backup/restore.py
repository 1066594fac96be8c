"""``restore SRC``: put a verified backup back onto an empty artifact root and store, then prove it.

Nothing is written before the manifest, its signature and every file's sha256 checked out
(``manifest.verify``), nor onto a target that holds models, rows or checkpoints unless ``force``
(then the backup's models and the store's tables are replaced). The store goes back the way its
backend allows: a SQLite copy is put in place as a file (or its rows moved into PostgreSQL through
the ``Store``, ``tables``), a ``pg_dump`` copy is loaded with ``pg_restore`` (or, onto SQLite, its
rows read from ``pg_restore``'s script into a new file, ``pgcopy``). Afterwards the
restored deployment must show the backup's audit head, row counts and registries anchored in its
chain, or the restore says what differs. Run it with the servers of the target stopped; a restore
that fails half-way (a full disk) leaves a target to restore again with ``force``. No Flask.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.backup import manifest as manifests
from service.backup import pgcopy, tables
from service.backup import pinned as pins
from service.backup.take import ARTIFACTS, CHECKPOINTS, SECRETS, backups
from service.models import artifacts, registry_anchor
from service.security import audit
from service.security.signing import ModelKeys
from service.store import Store

#: The tables a forced restore onto PostgreSQL drops before loading (every one the server makes).
OUR_TABLES = ("requests", "shadow", "prediction_batches", "feedback", "store_secrets", "maintenance", "audit",
              "alerts", "spool_marks", "predictions", "batch_runs")


@dataclass(frozen=True)
class Target:
    """Where the restored state goes, as the target deployment's settings name it."""

    artifacts_dir: Path
    database_url: str
    checkpoint_file: Path | None = None
    keys_files: dict[str, Path | None] = field(default_factory=dict)
    pii_hash_key: str | None = None


@dataclass(frozen=True)
class Restored:
    source: Path
    manifest: dict[str, Any]
    notes: list[str]


def resolve(src: Path) -> Path:
    """The backup ``src`` names: itself, or the newest whole backup in a folder of them."""
    src = Path(src)
    if not (src / manifests.MANIFEST).exists() and src.is_dir():
        found = backups(src)
        if found:
            return found[-1]
    return src


def restore(src: Path, target: Target, *, trusted: ModelKeys | None = None, force: bool = False) -> Restored:
    """Verify the backup ``src``, restore it onto ``target`` and check the result; raise ``ValueError``."""
    src = resolve(src)
    manifest = manifests.verify(src, trusted)
    backend = _store_of(manifest)
    _refuse_non_empty(target, manifest, force)
    _restore_store(src / manifest["store"]["file"], backend, target.database_url, force)
    for name in manifest["models"]:
        folder = artifacts.model_dir(target.artifacts_dir, name)
        if force and folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(src / ARTIFACTS / name, folder)
    if target.checkpoint_file is not None:
        _restore_checkpoints(src / CHECKPOINTS, Path(target.checkpoint_file))
    notes = _restore_secrets(src / SECRETS, target) if manifest.get("secrets") else [
        "the backup holds no secrets: create API keys again (`keys create`), and erasure finds subjects logged "
        "before only with the same PII_HASH_KEY"]
    problems = check(target, manifest)
    if problems:
        raise ValueError(f"restored, but the result differs from the backup: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return Restored(src, manifest, notes)


def _store_of(manifest: dict[str, Any]) -> str:
    """The backend of the backup's store copy; refuse a manifest that points anywhere else."""
    store = manifest.get("store") if isinstance(manifest.get("store"), dict) else {}
    copies = {"sqlite": pins.SQLITE_COPY, "postgresql": pins.PG_COPY}
    backend = store.get("backend")
    if backend not in copies or store.get("file") != copies[backend] or store["file"] not in manifest["files"] \
            or not isinstance(store.get("rows"), dict) or not isinstance(manifest.get("models"), dict) \
            or not all(artifacts.MODEL_NAME_RE.fullmatch(str(name)) for name in manifest["models"]):
        raise manifests.BackupRefused("damaged backup: manifest.json does not describe its store copy and models")
    return backend


def check(target: Target, manifest: dict[str, Any]) -> list[str]:
    """What differs between the restored deployment and the backup (empty: nothing)."""
    store = Store.from_url(target.database_url)
    try:
        problems = []
        chain = audit.verify(store)
        head = manifest["audit"]
        if not chain.ok:
            problems.append(f"audit chain broken at record {chain.broken_seq}: {chain.reason}")
        elif (chain.count, chain.head) != (head["seq"], head["hash"]):
            problems.append(f"audit chain ends at record {chain.count}, the backup's at {head['seq']}")
        rows = _counts(store)
        for table, expected in manifest["store"]["rows"].items():
            if rows.get(table, 0) != expected:
                problems.append(f"{table} holds {rows.get(table, 0)} row(s), the backup {expected}")
        problems += registry_anchor.check_registry(store, target.artifacts_dir)
        return problems
    finally:
        store.close()


def _counts(store: Store) -> dict[str, int]:
    counts = {}
    for table in pins.COUNTED:
        try:
            counts[table] = int(store.fetch(f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608  # nosec B608  # our names
        except sqlite3.Error:
            counts[table] = 0
    return counts


def _refuse_non_empty(target: Target, manifest: dict[str, Any], force: bool) -> None:
    if force:
        return
    found = []
    models = artifacts.list_models(target.artifacts_dir)
    if models:
        found.append(f"{target.artifacts_dir} holds model(s) {', '.join(models)}")
    if pins.backend_of(target.database_url) == "postgresql" or pins.sqlite_path(target.database_url).exists():
        store = Store.from_url(target.database_url)
        try:
            rows = sum(_counts(store).values())
        finally:
            store.close()
        if rows:
            found.append(f"the store holds {rows} row(s)")
    if target.checkpoint_file is not None and Path(target.checkpoint_file).is_file() \
            and Path(target.checkpoint_file).stat().st_size:
        found.append(f"{target.checkpoint_file} holds checkpoints")
    if found:
        raise ValueError(f"the target is not empty: {'; '.join(found)} (--force replaces them)")


def _restore_store(copy: Path, backend: str, url: str, force: bool) -> None:
    if pins.backend_of(url) == "sqlite":
        path = pins.sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.restoring")
        if backend == "sqlite":
            shutil.copyfile(copy, staged)
        else:
            _sqlite_from_dump(copy, staged)
        for stale in (Path(f"{path}-wal"), Path(f"{path}-shm")):  # an empty store's journal: not ours
            stale.unlink(missing_ok=True)
        os.replace(staged, path)
        return
    if force:
        _drop_tables(url)
    if backend == "postgresql":
        pins.restore_pg(copy, url, clean=True)  # --clean: the empty schema a server made is replaced
        return
    store = Store.from_url(url)
    try:
        tables.copy_into(copy, store)
    finally:
        store.close()


def _sqlite_from_dump(dump: Path, staged: Path) -> None:
    """Build a new SQLite file at ``staged`` from a ``pg_dump`` copy: the server's schema, the dump's rows."""
    for leftover in (staged, Path(f"{staged}-wal"), Path(f"{staged}-shm")):  # a restore that failed before
        leftover.unlink(missing_ok=True)
    store = Store.from_url(f"sqlite:///{staged.absolute()}")
    try:
        pgcopy.copy_dump_into(dump, store)
    except BaseException:
        store.close()
        for partial in (staged, Path(f"{staged}-wal"), Path(f"{staged}-shm")):
            partial.unlink(missing_ok=True)
        raise
    store.close()
    db = sqlite3.connect(staged, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to move into place
    finally:
        db.close()


def _restore_checkpoints(saved: Path, path: Path) -> None:
    # checkpoints of another chain would contradict the restored one: kept aside, never deleted
    if path.is_file() and path.stat().st_size:
        os.replace(path, path.with_name(f"{path.name}.replaced-{int(time.time())}"))
    if saved.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saved, path)


def _drop_tables(url: str) -> None:
    store = Store.from_url(url)
    try:
        with store.transaction() as db:
            for table in OUR_TABLES:
                db.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    finally:
        store.close()


def _restore_secrets(folder: Path, target: Target) -> list[str]:
    notes = []
    for name, path in target.keys_files.items():
        saved = folder / f"{name}.json"
        if not saved.is_file():
            continue
        if path is None:
            notes.append(f"{saved} not restored: no target file is configured for it")
        elif Path(path).exists():
            notes.append(f"{path} exists and was kept; the backup's copy is {saved}")
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(saved.read_bytes())
    with contextlib.suppress(FileNotFoundError):
        key = (folder / "pii-hash-key").read_text()
        if key != (target.pii_hash_key or ""):
            notes.append(f"PII_HASH_KEY differs from the backup's ({folder / 'pii-hash-key'}): set it to that value, "
                         "or erasure will not find subjects logged before")
    return notes

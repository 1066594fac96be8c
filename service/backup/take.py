"""``backup DEST``: one consistent snapshot of a serving deployment, written beside older ones.

The backup is written to ``DEST/.<stamp>.partial`` and renamed to ``DEST/<stamp>`` once its
manifest is written, so a folder without the dot is always whole; ``keep`` then deletes all but
the newest backups. Registries are copied under every model's registry lock with the store's
snapshot pinned in the same moment (see ``service.backup``); versions are copied after, and a
version whose copied bytes fail verification is left out and named in the manifest. No Flask.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.backup import manifest as manifests
from service.backup import pinned as pins
from service.errors import ArtifactError
from service.models import artifacts, registry, registry_file
from service.security import checkpoint
from service.security.signing import ModelKeys

ARTIFACTS = "artifacts"
CHECKPOINTS = "audit-checkpoints.jsonl"
SECRETS = "secrets"
#: Registry files copied per model: the state and its last-good copy (broken copies and locks are not).
REGISTRY_FILES = (registry_file.REGISTRY_FILE, registry_file.LAST_GOOD_FILE)
STAMP = "%Y%m%dT%H%M%SZ"
#: The ``maintenance`` row a finished backup writes: /metrics shows its age, an alert pages when it is old.
JOB = "backup"
PARTIAL = ".partial"


@dataclass(frozen=True)
class Sources:
    """What a deployment's state is made of, as its settings name it."""

    artifacts_dir: Path
    database_url: str
    checkpoint_file: Path | None = None
    keys_files: dict[str, Path | None] = field(default_factory=dict)  # secrets/<name>: API keys files
    pii_hash_key: str | None = None


@dataclass(frozen=True)
class Taken:
    path: Path
    manifest: dict[str, Any]
    seconds: float
    size: int
    removed: list[Path]


def take(dest: Path, sources: Sources, *, include_secrets: bool = False, verify_keys: ModelKeys | None = None,
         sign_keys: ModelKeys | None = None, keep: int | None = None) -> Taken:
    """Write one backup into a new folder under ``dest``; return where, what, and how long it took."""
    started = time.monotonic()
    dest = Path(dest)
    if dest.resolve().is_relative_to(Path(sources.artifacts_dir).resolve()):
        raise ValueError("DEST must not be inside ARTIFACTS_DIR: a backup folder there would read as a model")
    dest.mkdir(parents=True, exist_ok=True)
    stamp = _free_stamp(dest)
    work = dest / f".{stamp}{PARTIAL}"
    work.mkdir(mode=0o700)
    try:
        body = _fill(work, sources, include_secrets, verify_keys)
        body["created_at"] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        written = manifests.write(work, body, sign_keys)
        final = dest / stamp
        os.rename(work, final)
        _fsync_dir(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    removed = prune(dest, keep) if keep else []
    size = sum(meta["size"] for meta in written["files"].values())
    return Taken(final, written, time.monotonic() - started, size, removed)


def _fill(work: Path, sources: Sources, include_secrets: bool, verify_keys: ModelKeys | None) -> dict[str, Any]:
    root = Path(sources.artifacts_dir)
    models = artifacts.list_models(root)
    body: dict[str, Any] = {"secrets": include_secrets, "models": {}}
    with contextlib.ExitStack() as held:
        for name in models:  # one order for every lock: no two backups wait on each other
            held.enter_context(_lock(root, name))
        snapshot = pins.pin(sources.database_url)
        try:
            for name in models:
                body["models"][name] = _copy_registry(root, name, work / ARTIFACTS / name)
            if sources.checkpoint_file is not None:
                _copy_checkpoints(sources.checkpoint_file, work / CHECKPOINTS, snapshot.head["seq"])
        except BaseException:
            snapshot.close()
            raise
    try:  # the locks are released; the store copy reads the pinned snapshot while changes go on
        for name in models:
            body["models"][name].update(_copy_versions(root, name, work / ARTIFACTS / name, verify_keys))
        body["store"] = {"backend": snapshot.backend, "file": pins.copy_store(snapshot, work, include_secrets=include_secrets),
                         "rows": {**snapshot.counts, **({} if include_secrets else dict.fromkeys(pins.SECRET_TABLES, 0))}}
        body["audit"] = snapshot.head
    finally:
        snapshot.close()
    if include_secrets:
        _copy_secrets(work / SECRETS, sources)
    return body


def _lock(root: Path, name: str) -> contextlib.AbstractContextManager[None]:
    # a read-only install (a mounted volume) has no writer to wait for, and no lock file to open
    writable = os.access(artifacts.model_dir(root, name), os.W_OK)
    return registry.locked(root, name) if writable else contextlib.nullcontext()


def _copy_registry(root: Path, name: str, target: Path) -> dict[str, Any]:
    target.mkdir(parents=True)
    found: dict[str, Any] = {"registry": None, "labels": {}}
    for filename in REGISTRY_FILES:
        try:
            raw = (artifacts.model_dir(root, name) / filename).read_bytes()
        except FileNotFoundError:
            continue
        (target / filename).write_bytes(raw)
        if filename == registry_file.REGISTRY_FILE:
            found["registry"] = registry_file.state_digest(raw)
            with contextlib.suppress(ValueError, AttributeError):
                found["labels"] = json.loads(raw).get("labels", {})
    return found


def _copy_versions(root: Path, name: str, target: Path, keys: ModelKeys | None) -> dict[str, Any]:
    """Copy each version, then verify the copy (sha256, and signature with trusted keys); drop a bad one."""
    versions, skipped = [], {}
    for version in artifacts.list_versions(root, name):
        copied = target / str(version)
        try:
            shutil.copytree(artifacts.version_dir(root, name, version), copied)
            artifacts.verify_version(copied, expected_name=name, expected_version=version, signing_key=keys)
        except (OSError, ArtifactError, shutil.Error) as exc:
            shutil.rmtree(copied, ignore_errors=True)
            skipped[str(version)] = str(exc)
            continue
        versions.append(version)
    return {"versions": versions, "skipped": skipped}


def _copy_checkpoints(source: Path, target: Path, seq: int) -> None:
    """Copy the checkpoints that cover the snapshot's chain (a newer one would contradict it)."""
    try:
        points = checkpoint.read(source)
    except FileNotFoundError:
        return
    kept = [p for p in points if p.seq <= seq]
    if kept:
        target.write_text("".join(json.dumps(p.__dict__, sort_keys=True) + "\n" for p in kept), encoding="utf-8")


def _copy_secrets(target: Path, sources: Sources) -> None:
    target.mkdir(mode=0o700)
    for name, path in sources.keys_files.items():
        if path is not None and Path(path).is_file():
            _write_private(target / f"{name}.json", Path(path).read_bytes())
    if sources.pii_hash_key:
        _write_private(target / "pii-hash-key", sources.pii_hash_key.encode())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def mark_done(store: Any, when: float) -> None:
    """Note in the source store that a backup finished at ``when`` (after its snapshot: not in it)."""
    upsert = store.insert_sql("maintenance", ("job", "last_run"), conflict="replace", key=("job",))
    with store.transaction() as db:
        db.execute(upsert, (JOB, when))


def prune(dest: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest whole backups in ``dest``; return what was deleted."""
    whole = backups(dest)
    removed = whole[:-keep] if keep > 0 else []
    for path in removed:
        shutil.rmtree(path)
    return removed


def backups(dest: Path) -> list[Path]:
    """The whole backups in ``dest``, oldest first (stamps sort by time)."""
    return sorted(p for p in Path(dest).iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / manifests.MANIFEST).is_file())


def _free_stamp(dest: Path) -> str:
    stamp = base = datetime.now(UTC).strftime(STAMP)
    n = 1
    while (dest / stamp).exists() or (dest / f".{stamp}{PARTIAL}").exists():
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

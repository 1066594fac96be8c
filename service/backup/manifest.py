"""A backup's manifest: what it holds (every file's sha256), signed, and checked before a restore.

Restoring trusts nothing in the folder until this module said it is ours, whole and, when signed
or when trusted keys are given, signed by one of them. A damaged or foreign backup is refused with
one line (``BackupRefused``) before anything is written. No Flask.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path
from typing import Any

from service.models.artifacts import canonical_json, file_entry, sha256_file
from service.security.signing import ModelKeys

MANIFEST = "manifest.json"
FORMAT = "prediction-server-backup"
FORMAT_VERSION = 1


class BackupRefused(ValueError):
    """A backup that must not be restored (damaged, foreign, unsigned where a signature is required)."""


def list_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``folder`` but the manifest, by path relative to it, with sha256 and size."""
    folder = Path(folder)
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST:
            found[path.relative_to(folder).as_posix()] = file_entry(path)
    return found


def signed_bytes(manifest: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"})


def write(folder: Path, manifest: dict[str, Any], keys: ModelKeys | None = None) -> dict[str, Any]:
    """List the folder's files in ``manifest``, sign it when ``keys`` hold a private key, and write it."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": list_files(folder)}
    signature = keys.sign(signed_bytes(manifest)) if keys is not None and keys.private_key is not None else None
    if signature:
        manifest["signature"] = signature
    path = Path(folder) / MANIFEST
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    return manifest


def read(folder: Path) -> dict[str, Any]:
    """Read a backup's manifest; refuse a folder that is not a backup of this server."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BackupRefused(f"{folder} is not a backup: it has no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise BackupRefused(f"{MANIFEST} of {folder} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupRefused(f"{folder} is not a backup of this server (foreign {MANIFEST})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupRefused(f"backup format_version {manifest.get('format_version')!r} is not supported")
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("audit"), dict):
        raise BackupRefused(f"{MANIFEST} of {folder} lacks its file list or audit head")
    return manifest


def verify(folder: Path, trusted: ModelKeys | None = None) -> dict[str, Any]:
    """Check the manifest, its signature and every file; return the manifest or raise ``BackupRefused``.

    A signed backup needs ``trusted`` keys that include its signer; with trusted keys, an unsigned
    backup is refused too (anyone could have written it).
    """
    folder = Path(folder)
    manifest = read(folder)
    signature = manifest.get("signature")
    if trusted is not None and trusted.verifies:
        refused = trusted.check(signed_bytes(manifest), signature) if signature else "it is not signed"
        if refused:
            raise BackupRefused(f"backup signature refused: {refused.replace('manifest ', '')}")
    elif signature:
        kid = str(signature).split(":")[1][:16] if str(signature).count(":") >= 2 else "?"
        raise BackupRefused(f"backup is signed by key {kid}: give its public key (BACKUP_TRUSTED_KEYS) to check it")
    files = manifest["files"]
    for name, meta in files.items():
        path = folder / name
        if name.startswith("/") or ".." in Path(name).parts or not isinstance(meta, dict):
            raise BackupRefused(f"damaged backup: illegal entry {name!r} in {MANIFEST}")
        if not path.is_file():
            raise BackupRefused(f"damaged backup: {name} is missing")
        if path.stat().st_size != meta.get("size") or not hmac.compare_digest(sha256_file(path), str(meta.get("sha256"))):
            raise BackupRefused(f"damaged backup: {name} does not match its sha256 in {MANIFEST}")
    extra = set(list_files(folder)) - set(files)
    if extra:
        raise BackupRefused(f"damaged backup: files not in {MANIFEST}: {', '.join(sorted(extra))}")
    return manifest

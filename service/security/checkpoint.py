"""Checkpoints: the audit chain's head, signed and kept outside the database.

Anyone who can write the database can delete or edit records and recompute every hash after
them: the chain then verifies. A checkpoint (seq, head hash, time, Ed25519 signature) appended
to a file outside the store fixes the chain up to ``seq``: a rewritten chain no longer has that
hash at that position, and ``check`` says which checkpoint it contradicts. Records after the
newest checkpoint are not anchored yet (``Coverage`` says how many). The key signs checkpoints
only (``AUDIT_CHECKPOINT_KEY_FILE``), and the chain is verified before its head is signed, so a
chain already broken is never vouched for. Lines are appended under an exclusive lock in one
write each, then fsynced; a torn last line (a crash mid-write) is ignored by readers. Who writes
when (the elected worker, an admin change, the CLI) is the caller's choice. No Flask.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from service.errors import ConfigError
from service.security import audit, signing

PUBLIC_SUFFIX = ".pub"


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head: str
    ts: float
    key: str
    signature: str

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    def signed_bytes(self) -> bytes:
        return _body(self.seq, self.head, self.ts)


def _body(seq: int, head: str, ts: float) -> bytes:
    return json.dumps({"seq": seq, "head": head, "ts": ts}, sort_keys=True, separators=(",", ":")).encode()


def generate(private_path: Path) -> tuple[Path, str]:
    """Write a new checkpoint key (mode 0600) and its public key beside it (``.pub``); return that path
    and the key id. Never overwrites a key."""
    private_path = Path(private_path)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: an old key may still verify
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = public_path(private_path)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return public, signing.key_id(key.public_key())


def public_path(private_path: Path) -> Path:
    return Path(f"{private_path}{PUBLIC_SUFFIX}")


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read the public key checkpoints are checked with; raise ``ConfigError`` naming a bad file."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the checkpoint public key {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def read(path: Path) -> list[Checkpoint]:
    """Every checkpoint in the file, oldest first (none when there is no file); skip a torn last line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return []
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            found.append(Checkpoint(**json.loads(line)))
        except (ValueError, TypeError):
            if number == len(lines):  # no newline after it: a write cut short by a crash
                continue
            raise ValueError(f"{path} line {number} is not a checkpoint") from None
    return found


def write(store: Any, key: Ed25519PrivateKey, path: Path, *, now: float | None = None) -> Checkpoint | None:
    """Verify the chain (from the newest checkpoint on) and append a signed checkpoint of its head;
    return it, or None when the head is the newest checkpoint's already. Raise ``ValueError`` when
    the chain is broken or contradicts the newest checkpoint: that head is not signed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one writer at a time: each line follows the one it read
        last = read(path)[-1:] or None
        since, prev = (last[0].seq, last[0].head) if last else (0, audit.GENESIS)
        if last:
            found = store.fetch("SELECT hash FROM audit WHERE seq = ?", (since,))
            if not found or found[0][0] != prev:
                raise ValueError(f"the audit chain contradicts the checkpoint of {last[0].when} (record {since})")
        check = audit.verify(store, since=since, prev=prev)
        if not check.ok:
            raise ValueError(f"audit chain broken at record {check.broken_seq}: {check.reason}")
        if check.count == since:
            return None
        ts = round(time.time() if now is None else now, 6)
        signature = base64.b64encode(key.sign(_body(check.count, check.head, ts))).decode()
        point = Checkpoint(check.count, check.head, ts, signing.key_id(key.public_key()), signature)
        fh.write(json.dumps(point.__dict__, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
        return point


@dataclass(frozen=True)
class Coverage:
    """What ``check`` found: the newest checkpoint that holds, the records after it, or a contradiction."""

    count: int
    checkpoint: Checkpoint | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"no checkpoint: none of the {self.count} record(s) is anchored outside the database"
        newer = self.count - self.checkpoint.seq
        return (f"records 1\u2013{self.checkpoint.seq} anchored by a checkpoint of {self.checkpoint.when}; "
                f"{newer} newer record(s) not yet anchored")


def check(store: Any, path: Path, public_key: Ed25519PublicKey | None) -> Coverage:
    """Check the chain against every checkpoint in ``path``: each signature, and that the chain holds
    each checkpoint's hash at its seq and reaches the newest one."""
    points = read(path)
    kid = signing.key_id(public_key) if public_key is not None else None
    for point in points:
        if public_key is None:
            return Coverage(0, point, f"checkpoint of {point.when} cannot be checked: no public key")
        try:
            if point.key != kid:
                raise InvalidSignature
            public_key.verify(base64.b64decode(point.signature), point.signed_bytes())
        except (InvalidSignature, ValueError):
            return Coverage(0, point, f"checkpoint of {point.when} (record {point.seq}) has a bad signature")
    wanted = {p.seq: p for p in points}
    contradicted: list[str] = []

    def seen(seq: int, digest: str) -> None:
        point = wanted.get(seq)
        if point is not None and point.head != digest and not contradicted:
            contradicted.append(f"the audit chain contradicts the checkpoint of {point.when}: record {seq} "
                                f"has hash {digest[:16]}…, the checkpoint {point.head[:16]}…")

    chain = audit.verify(store, seen=seen)
    newest = points[-1] if points else None
    if contradicted:
        return Coverage(chain.count, newest, contradicted[0])
    if newest is not None and chain.count < newest.seq and chain.ok:
        return Coverage(chain.count, newest, f"the audit chain ends at record {chain.count}, but the checkpoint "
                                             f"of {newest.when} covers records 1\u2013{newest.seq}")
    return Coverage(chain.count, newest)

"""API keys with scopes: who may call what.

Keys are high-entropy random tokens, so the keys file (``API_KEYS_FILE``) stores only a plain
SHA-256 of each one, as GitHub does for its tokens; the plaintext is shown once, when the key is
created, and is never stored or logged. ``KeyStore`` reads that file and picks up changes
(``keys revoke``) without a restart; ``Policy`` says which scopes a request may use without a
key (see ``load_policy``). It does not import Flask. The Flask shell (``init_app``,
``require_scope``) lives in ``service.api.auth``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service import files
from service.errors import ConfigError, Forbidden, Unauthorized

if TYPE_CHECKING:
    from service.config import Config

SCOPES = ("predict", "read", "admin")
#: Without API_KEYS_FILE these scopes need no key from a local request; admin never is open.
OPEN_SCOPES = ("predict", "read")
#: Id of the key ``ensure_local_admin`` creates.
LOCAL_ADMIN_ID = "local-admin"
KEY_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
KEY_PREFIX = "sk_"
#: Limits a key may set for itself in the keys file (``"rate_limit": {"requests": 5}``), per second.
RATE_LIMITS = ("requests", "rows")
#: Seconds between two looks at the keys file; a revoked key stops working within this time.
RELOAD_INTERVAL = 1.0
FILE_MODE = 0o600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiKey:
    """One stored key: its id, the hash of its plaintext and what it may do."""

    id: str
    sha256: str = field(repr=False)
    scopes: frozenset[str]
    created_at: str = ""
    #: Per-second rates this key has instead of the server's (``RATE_LIMIT_*``); 0 = unlimited.
    rate_limit: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        entry = {"id": self.id, "sha256": self.sha256, "scopes": sorted(self.scopes), "created_at": self.created_at}
        if self.rate_limit:
            entry["rate_limit"] = dict(self.rate_limit)
        return entry


def hash_key(plaintext: str) -> str:
    """Return the hex SHA-256 that the keys file stores for a plaintext key."""
    return hashlib.sha256(plaintext.encode("utf-8", "replace")).hexdigest()


def parse_keys(raw: bytes) -> tuple[ApiKey, ...]:
    """Parse the keys file's content, raising ``ValueError`` that says what is wrong."""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('expected an object {"keys": [...]}')
    keys: list[ApiKey] = []
    seen: set[str] = set()
    for i, entry in enumerate(doc["keys"]):
        where = f"keys[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not an object")
        key_id, digest, scopes = entry.get("id"), entry.get("sha256"), entry.get("scopes")
        if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"{where}.id must match {KEY_ID_RE.pattern}")
        if key_id in seen:
            raise ValueError(f"{where}.id {key_id!r} appears twice")
        if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest.lower()):
            raise ValueError(f"{where}.sha256 must be 64 hex digits")
        if not isinstance(scopes, list) or not all(isinstance(s, str) and s in SCOPES for s in scopes):
            raise ValueError(f"{where}.scopes must be a list of {', '.join(SCOPES)}")
        created_at = entry.get("created_at", "")
        if not isinstance(created_at, str):
            raise ValueError(f"{where}.created_at must be a string")
        seen.add(key_id)
        keys.append(ApiKey(key_id, digest.lower(), frozenset(scopes), created_at,
                           _rate_limit(entry.get("rate_limit", {}), where)))
    return tuple(keys)


def _rate_limit(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    """Check a key's ``rate_limit`` object: per-second numbers of 0 or more for ``RATE_LIMITS``."""
    if not isinstance(value, dict) or set(value) - set(RATE_LIMITS) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < float("inf") for v in value.values()):
        raise ValueError(f"{where}.rate_limit must be an object of {', '.join(RATE_LIMITS)} per second (0 or more)")
    return tuple(sorted((name, float(rate)) for name, rate in value.items()))


def _read_keys(path: Path) -> tuple[ApiKey, ...]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("the file does not exist (create a key with `python -m service keys create`)") from None
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror})") from None
    return parse_keys(raw)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Identify a version of the file cheaply; inode catches an atomic replace within one mtime tick."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class KeyStore:
    """The keys in one file, reloaded when the file changes so revocation needs no restart.

    A file that cannot be read at construction is a ``ConfigError`` (the server must not start
    believing it is protected when it is not); one that breaks later keeps the last good keys.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reload_interval: float = RELOAD_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        optional: bool = False,
        variable: str = "API_KEYS_FILE",
    ) -> None:
        self.path = Path(path)
        self.reload_interval = reload_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = _stamp(self.path)
        try:
            # An optional file (the local admin keys) that does not exist yet holds no keys until it does.
            self._keys = () if optional and self._stamp is None else _read_keys(self.path)
        except ValueError as exc:
            raise ConfigError(f"{variable}={self.path}: {exc}") from None
        self._checked = clock()

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """The keys currently in force, after a reload if the file changed."""
        self.reload_if_changed()
        return self._keys

    def reload_if_changed(self, force: bool = False) -> None:
        """Reread the file if its identity changed, looking at most once per interval."""
        now = self._clock()
        if not force and now - self._checked < self.reload_interval:
            return
        with self._lock:
            if not force and now - self._checked < self.reload_interval:
                return
            self._checked = now
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            # Remember the new stamp even on failure, so a broken file is reported once, not every second.
            self._stamp = stamp
            if stamp is None and not self._keys:
                return  # an optional file that is still absent
            try:
                keys = _read_keys(self.path)
            except ValueError as exc:
                log.error(
                    "keys file is unusable; keeping the last good keys",
                    extra={"path": str(self.path), "problem": str(exc), "keys_in_force": len(self._keys)},
                )
                return
            self._keys = keys
            log.info("keys file reloaded", extra={"path": str(self.path), "keys_in_force": len(keys)})

    def authenticate(self, token: str) -> ApiKey | None:
        """Return the key whose hash matches ``token``, or ``None``.

        Every stored hash is compared with ``hmac.compare_digest`` and the loop never stops
        early, so the time taken says nothing about which key, or how much of one, matched. A
        token no key matches makes the file be looked at now (one ``stat``), not up to
        ``reload_interval`` later: a key made a moment ago works on its first request.
        """
        digest = hash_key(token)
        found = self._match(digest, self.keys)
        if found is None:
            before = self._keys
            self.reload_if_changed(force=True)
            if self._keys is not before:
                found = self._match(digest, self._keys)
        return found

    @staticmethod
    def _match(digest: str, keys: tuple[ApiKey, ...]) -> ApiKey | None:
        found: ApiKey | None = None
        for key in keys:
            if hmac.compare_digest(digest, key.sha256) and found is None:
                found = key
        return found

    def authorize(self, token: str | None, scope: str, *others: str) -> ApiKey:
        """Return the key for ``token`` if it has ``scope`` (or one of ``others``); raise 401 or 403 otherwise."""
        if not token:
            raise Unauthorized(
                "Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
                details={"reason": "missing_credentials"},
            )
        key = self.authenticate(token)
        if key is None:
            log.info("rejected an unknown API key", extra={"scope": scope})
            raise Unauthorized("The API key is not valid.", details={"reason": "invalid_key"})
        if not key.scopes & {scope, *others}:
            log.info("API key lacks a scope", extra={"key_id": key.id, "scope": scope})
            raise Forbidden(f"This API key does not have the {scope!r} scope.", details={"required_scope": scope})
        return key


def credentials_from_headers(headers: Mapping[str, str]) -> str | None:
    """Return the key sent as ``Authorization: Bearer``, ``X-API-Key`` or Basic auth's password (in that order).

    Basic auth (any user name, the key as password) is what a browser can send, so people can
    open the monitoring page when keys are on; it carries the same key as the other two.
    """
    auth = headers.get("Authorization", "")
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if key := headers.get("X-API-Key", "").strip():
        return key
    if scheme.lower() == "basic" and token.strip():
        try:
            _user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or None
    return None


@dataclass(frozen=True)
class Policy:
    """Who may call what without a key, and the keys that open the rest.

    With ``API_KEYS_FILE`` every scope needs a key from it (``open_scopes`` is empty). Without
    it, predict and read are open to *local* requests (straight from a loopback peer, never
    through a proxy), or to every request when ``ALLOW_UNAUTHENTICATED`` is set; admin always
    needs a key, taken from the local admin keys file that ``make serve`` creates.
    """

    store: KeyStore
    open_scopes: frozenset[str] = frozenset()
    open_to_everyone: bool = False

    def is_open(self, scopes: tuple[str, ...], local: bool) -> bool:
        """Tell whether a request (``local`` or not) may use one of ``scopes`` without a key."""
        return bool(self.open_scopes & set(scopes)) and (local or self.open_to_everyone)


def load_policy(config: Config) -> Policy:
    """Apply the startup policy: keys when configured; else predict/read open on loopback only, or by opt-in.

    Refuses (``ConfigError``) to serve openly on a public address unless told to, and says
    loudly when anything is open.
    """
    if config.api_keys_file is not None:
        store = KeyStore(config.api_keys_file)
        log.info("API keys enabled", extra={"path": str(store.path), "keys_in_force": len(store.keys)})
        return Policy(store)
    if not config.is_loopback and not config.allow_unauthenticated:
        raise ConfigError(
            f"HOST={config.host} is reachable from other machines but API_KEYS_FILE is unset: "
            "set API_KEYS_FILE (create keys with `python -m service keys create`) "
            "or set ALLOW_UNAUTHENTICATED=1 to serve predict and read openly on purpose"
        )
    store = KeyStore(config.local_admin_keys_file, optional=True, variable="LOCAL_ADMIN_KEYS_FILE")
    who = "direct loopback clients" if not config.allow_unauthenticated else "anyone (ALLOW_UNAUTHENTICATED is set)"
    log.warning(
        "serving predict and read WITHOUT authentication to %s (API_KEYS_FILE is unset); admin calls and "
        "proxied requests need a key from %s", who, store.path,
        extra={"host": config.host, "local_admin_keys": len(store.keys)},
    )
    return Policy(store, frozenset(OPEN_SCOPES), config.allow_unauthenticated)


def ensure_local_admin(path: str | os.PathLike[str]) -> str | None:
    """Create the local admin key in ``path`` unless the file already holds an admin key; return its plaintext."""
    path = Path(path)
    with _locked(path):
        keys = _read_existing(path)
        if any("admin" in k.scopes for k in keys):
            return None
        return _add_key(path, keys, LOCAL_ADMIN_ID, SCOPES)


# -- Managing the keys file (the ``keys`` commands) -------------------------------------------


def create_key(path: str | os.PathLike[str], key_id: str, scopes: list[str] | tuple[str, ...]) -> str:
    """Add a new key to the file and return its plaintext, which is not kept anywhere."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"invalid key id {key_id!r}: use {KEY_ID_RE.pattern}")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}: choose from {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"give at least one scope: {', '.join(SCOPES)}")
    path = Path(path)
    with _locked(path):
        return _add_key(path, _read_existing(path), key_id, scopes)


def _add_key(path: Path, keys: tuple[ApiKey, ...], key_id: str, scopes: list[str] | tuple[str, ...]) -> str:
    if any(k.id == key_id for k in keys):
        raise ValueError(f"a key named {key_id!r} already exists; revoke it first or pick another name")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _write_keys(path, [*keys, ApiKey(key_id, hash_key(plaintext), frozenset(scopes), created_at)])
    return plaintext


def list_keys(path: str | os.PathLike[str]) -> list[ApiKey]:
    """Return the keys in the file (none if it does not exist yet)."""
    return list(_read_existing(Path(path)))


def revoke_key(path: str | os.PathLike[str], key_id: str) -> None:
    """Remove a key; running servers stop accepting it within ``RELOAD_INTERVAL``."""
    path = Path(path)
    with _locked(path):
        keys = _read_existing(path)
        if not any(k.id == key_id for k in keys):
            raise ValueError(f"no key named {key_id!r} in {path}")
        _write_keys(path, [k for k in keys if k.id != key_id])


def _read_existing(path: Path) -> tuple[ApiKey, ...]:
    if not path.exists():
        return ()
    try:
        return _read_keys(path)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _locked(path: Path):
    """Serialise read-modify-write so two commands at once cannot lose a revocation."""
    return files.exclusive_lock(path.with_name(path.name + ".lock"), FILE_MODE)


def _write_keys(path: Path, keys: list[ApiKey]) -> None:
    """Replace the file atomically (readable by its owner only), so a server never reads half of it."""
    files.write_json_atomic(path, {"keys": [k.to_dict() for k in keys]}, mode=FILE_MODE)

"""Model signing keys: Ed25519 key pairs, the keys a process signs or verifies manifests with.

Packaging signs a manifest with a private key the server never holds; servers hold only the
trusted public keys (several at once, so a key can be rotated) and a signature names the key
that made it. The older shared-secret HMAC mode (``MODEL_SIGNING_KEY``) still works, but a
server holding that secret could forge signatures too, so Ed25519 is the recommended mode.
This module only handles keys and bytes; which manifest bytes are signed is ``artifacts``'.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from service.errors import ConfigError

ED25519 = "ed25519"
HMAC = "hmac-sha256"
PRIVATE_FILE = "model-signing.key"
PUBLIC_SUFFIX = ".pub"


def key_id(public_key: Ed25519PublicKey) -> str:
    """Name a public key by its content: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class ModelKeys:
    """What one process signs (``private_key``, ``hmac_key``) and trusts (``public_keys``, ``hmac_key``)."""

    hmac_key: str | None = None
    public_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=lambda: MappingProxyType({}))
    private_key: Ed25519PrivateKey | None = None

    @property
    def verifies(self) -> bool:
        """Tell whether manifests must carry a valid signature under these keys."""
        return bool(self.hmac_key or self.public_keys)

    def __bool__(self) -> bool:
        return bool(self.verifies or self.private_key)

    def sign(self, body: bytes) -> str | None:
        """Return the signature of ``body``: Ed25519 when a private key is held, else HMAC, else None."""
        if self.private_key is not None:
            signature = base64.b64encode(self.private_key.sign(body)).decode()
            return f"{ED25519}:{key_id(self.private_key.public_key())}:{signature}"
        if self.hmac_key:
            return hmac_signature(body, self.hmac_key)
        return None

    def check(self, body: bytes, signature: object) -> str | None:
        """Return why ``signature`` does not vouch for ``body`` under these keys, or None when it does."""
        if not signature or not isinstance(signature, str):
            needs = "MODEL_TRUSTED_KEYS" if self.public_keys else "MODEL_SIGNING_KEY"
            return f"manifest is not signed and {needs} requires a signature"
        if signature.startswith(ED25519 + ":"):
            _, kid, encoded = (signature.split(":", 2) + ["", ""])[:3]
            public = self.public_keys.get(kid)
            if public is None:
                return f"manifest is signed by key {kid[:16]!r}, which is not a trusted key"
            try:
                public.verify(base64.b64decode(encoded, validate=True), body)
            except (InvalidSignature, binascii.Error, ValueError):
                return "manifest signature does not match"
            return None
        if self.hmac_key and hmac.compare_digest(signature, hmac_signature(body, self.hmac_key)):
            return None
        if not self.hmac_key:
            return "manifest carries no Ed25519 signature and no HMAC key is configured"
        return "manifest signature does not match"


def hmac_signature(body: bytes, key: str) -> str:
    return f"{HMAC}:" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def generate(folder: Path) -> tuple[Path, Path, str]:
    """Write a new key pair into ``folder``: the private key readable by its owner only (0600).

    Return (private path, public path, key id). Refuse to overwrite an existing private key.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    private_path, public_path = folder / PRIVATE_FILE, folder / f"model-signing-{kid}{PUBLIC_SUFFIX}"
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # O_EXCL: never replace a key someone may still sign with; the mode is set at creation, never widened
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, kid


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read the signing key; refuse one that others than its owner may read (as ssh does)."""
    mode = Path(path).stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}): chmod 600 it (and make a new pair "
                          "if anyone else may have read it)")
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_public_keys(paths: Iterable[Path | str]) -> dict[str, Ed25519PublicKey]:
    """Read trusted public keys from files or folders (every ``*.pub``/``*.pem`` file in a folder)."""
    paths = [Path(p) for p in paths]
    found: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        files = sorted(p for p in path.iterdir() if p.suffix in (PUBLIC_SUFFIX, ".pem")) if path.is_dir() else [path]
        for file in files:
            try:
                key = serialization.load_pem_public_key(file.read_bytes())
            except OSError as exc:
                raise ConfigError(f"MODEL_TRUSTED_KEYS: cannot read {file}: {exc.strerror}") from None
            except ValueError:
                raise ConfigError(f"MODEL_TRUSTED_KEYS: {file} is not a PEM public key") from None
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(f"MODEL_TRUSTED_KEYS: {file} is not an Ed25519 public key")
            found[key_id(key)] = key
    if not found and paths:
        raise ConfigError("MODEL_TRUSTED_KEYS names no public key file")
    return found


def model_keys(hmac_key: str | None = None, trusted: Iterable[Path | str] = (),
               private_key_file: Path | None = None) -> ModelKeys:
    """Build the keys of one process from its settings; raise ``ConfigError`` naming a bad file."""
    trusted = list(trusted)
    return ModelKeys(hmac_key=hmac_key or None,
                     public_keys=MappingProxyType(load_public_keys(trusted)) if trusted else MappingProxyType({}),
                     private_key=load_private_key(private_key_file) if private_key_file else None)

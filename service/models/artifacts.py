"""Artifacts on disk: manifest read/write, hashing, signing and verification.

A version folder ``<root>/<model>/<version>/`` holds ``model.joblib`` and ``manifest.json``.
This module decides whether such a folder may be trusted; it never unpickles anything (that is
``runtime``'s job, and only after ``verify_version`` passed). No Flask here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ArtifactError
from service.files import exclusive_lock, write_json_atomic  # noqa: F401  (part of this module's surface)
from service.security.signing import ModelKeys

MANIFEST = "manifest.json"
MODEL_FILE = "model.joblib"
REGISTRY_FILE = "registry.json"
FORMAT_VERSION = 1
SUPPORTED_MODEL_FORMATS = ("joblib",)
FEATURE_TYPES = ("float", "int", "bool", "category", "string")
#: The feature types whose values are numbers: ranges, bins and means apply to them.
NUMERIC_TYPES = ("float", "int")
MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
VERSION_RE = re.compile(r"[1-9][0-9]{0,8}")
CHUNK = 1 << 20


def check_model_name(name: str) -> str:
    """Return ``name`` when it is a legal model name, else raise ``ValueError``."""
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise ValueError("model names match [a-z0-9][a-z0-9_-]{0,63}")
    return name


def check_version(version: str | int) -> int:
    """Return ``version`` as an int when it is a legal version number, else raise ``ValueError``."""
    text = str(version)
    if isinstance(version, bool) or not VERSION_RE.fullmatch(text):
        raise ValueError("versions are positive integers")
    return int(text)


def model_dir(root: Path, name: str) -> Path:
    """Return the folder of model ``name``; the name is checked before it touches a path."""
    return Path(root) / check_model_name(name)


def version_dir(root: Path, name: str, version: int | str) -> Path:
    return model_dir(root, name) / str(check_version(version))


def list_models(root: Path) -> list[str]:
    """List model names under ``root``, ignoring anything that is not a legal name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and MODEL_NAME_RE.fullmatch(p.name))


def list_versions(root: Path, name: str) -> list[int]:
    """List the version numbers of a model, oldest first (temp folders are skipped)."""
    folder = model_dir(root, name)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and VERSION_RE.fullmatch(p.name))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(data: Any) -> bytes:
    """Serialise deterministically (sorted keys, no spaces): the bytes a signature covers."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def signed_bytes(manifest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the canonical manifest without its ``signature`` field.

    The manifest lists every file's sha256, so a signature vouches for every file too.
    """
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"})


def sign_manifest(manifest: dict[str, Any], key: str | ModelKeys) -> str | None:
    """Sign the manifest: Ed25519 with a private key, HMAC-SHA256 with a shared ``key`` string.

    Return None when ``key`` holds nothing to sign with (only trusted public keys).
    """
    keys = ModelKeys(hmac_key=key) if isinstance(key, str) else key
    return keys.sign(signed_bytes(manifest))


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and minimally check a manifest; raise ``ArtifactError`` with the reason."""
    path = Path(folder) / MANIFEST
    try:
        with open(path, "rb") as fh:
            manifest = json.loads(fh.read(), parse_constant=_reject_constant)
    except FileNotFoundError:
        raise ArtifactError(f"{MANIFEST} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{MANIFEST} is not a JSON object")
    for key in ("name", "version", "task", "files", "input", "libraries"):
        if key not in manifest:
            raise ArtifactError(f"{MANIFEST} lacks the field {key!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"unsupported manifest format_version {manifest.get('format_version')!r}")
    _check_io(manifest)
    return manifest


def _check_io(manifest: dict[str, Any]) -> None:
    """Refuse a manifest whose schema the server could not use, at load time rather than per request."""
    features = manifest["input"].get("features") if isinstance(manifest["input"], dict) else None
    if not isinstance(features, list) or not features:
        raise ArtifactError(f"{MANIFEST} input.features must be a non-empty list")
    for feature in features:
        if not isinstance(feature, dict) or not isinstance(feature.get("name"), str) \
                or feature.get("type") not in FEATURE_TYPES:
            raise ArtifactError(f"{MANIFEST} input.features holds an entry without a name or a known type")
    if not isinstance(manifest.get("output", {}), dict):
        raise ArtifactError(f"{MANIFEST} output must be an object")


@dataclass(frozen=True)
class VerifiedVersion:
    """A version folder whose files all match their manifest hashes."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.folder / self.manifest["model_file"]


def verify_version(folder: Path, *, expected_name: str | None = None, expected_version: int | None = None,
                   signing_key: str | ModelKeys | None = None, sklearn_version: str | None = None) -> VerifiedVersion:
    """Check a version folder before anything in it is unpickled.

    Raises ``ArtifactError`` naming the first problem: bad manifest, name/version mismatch,
    bad or missing signature (required when ``signing_key`` is an HMAC key string or keys that
    verify: trusted Ed25519 public keys and/or an HMAC key), unknown model format, missing, extra or altered files, or a
    scikit-learn major.minor different from the one the model was trained with.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if expected_name is not None and manifest["name"] != expected_name:
        raise ArtifactError(f"manifest names model {manifest['name']!r}, folder is {expected_name!r}")
    if expected_version is not None and (type(manifest["version"]) is not int or manifest["version"] != expected_version):
        raise ArtifactError(f"manifest says version {manifest['version']!r}, folder is {expected_version}")
    keys = ModelKeys(hmac_key=signing_key) if isinstance(signing_key, str) else signing_key
    if keys is not None and keys.verifies:
        refused = keys.check(signed_bytes(manifest), manifest.get("signature"))
        if refused:
            raise ArtifactError(refused)
    fmt = manifest.get("model_format")
    if fmt not in SUPPORTED_MODEL_FORMATS:
        raise ArtifactError(f"unknown model format {fmt!r}; supported: {', '.join(SUPPORTED_MODEL_FORMATS)}")
    files = manifest["files"]
    model_file = manifest.get("model_file")
    if not isinstance(files, dict) or not isinstance(model_file, str) or model_file not in files:
        raise ArtifactError("manifest does not list the model file")
    check_files(folder, files)
    if "content_sha256" in manifest and manifest["content_sha256"] != content_hash(files):
        raise ArtifactError("content_sha256 does not match the files listed in the manifest")
    if sklearn_version is not None:
        libraries = manifest["libraries"] if isinstance(manifest["libraries"], dict) else {}
        trained = str(libraries.get("scikit-learn", ""))
        if _major_minor(trained) != _major_minor(sklearn_version):
            raise ArtifactError(
                f"model was trained with scikit-learn {trained or 'unknown'}, this server runs {sklearn_version}"
            )
    return VerifiedVersion(folder, manifest)


def check_files(folder: Path, files: dict[str, Any]) -> None:
    """Raise ``ArtifactError`` unless the folder holds exactly ``files`` (a manifest's list), each with its size and sha256."""
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
    extra = present - set(files)
    if extra:
        raise ArtifactError(f"unexpected files not in the manifest: {', '.join(sorted(extra))}")
    for filename, meta in files.items():
        if "/" in filename or filename.startswith("."):
            raise ArtifactError(f"illegal file name in manifest: {filename!r}")
        if not isinstance(meta, dict):
            raise ArtifactError(f"manifest entry for {filename} is not an object")
        path = folder / filename
        if not path.is_file():
            raise ArtifactError(f"file {filename} is missing")
        if path.stat().st_size != meta.get("size"):
            raise ArtifactError(f"file {filename} has size {path.stat().st_size}, manifest says {meta.get('size')}")
        if not hmac.compare_digest(sha256_file(path), str(meta.get("sha256"))):
            raise ArtifactError(f"file {filename} does not match its sha256 in the manifest")


def content_hash(files: dict[str, Any]) -> str:
    """Identify a version by its files' content alone: the sha256 of their sorted names and hashes."""
    lines = "".join(f"{name}\0{meta['sha256']}\n" for name, meta in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": Path(path).stat().st_size}


def _reject_constant(name: str) -> None:
    # NaN/Infinity are not JSON and cannot be signed (canonical_json refuses them)
    raise ValueError(f"{name} is not allowed")


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])

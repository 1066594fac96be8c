"""Model versions loaded once in the Gunicorn master, before it forks, for every worker to share.

A worker forked from the master finds here the versions the master unpickled and prepared (and,
for ONNX Runtime, the session it opened) and serves them copy-on-write instead of loading its
own: memory the workers share, and no load before a fresh or recycled worker's first request.
The master stays one thread: ``hold_all`` drops the sessions again if loading started a thread.
A version not held here (new since the fork, refused, another backend) is loaded by the worker
itself, as before. No Flask.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ArtifactError
from service.models import artifacts
from service.serving import runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Held:
    """A version the master loaded: the backend it chose and what a worker checks before taking it."""

    model: runtime.LoadedModel
    backend: str
    manifest_sha256: str  # of manifest.json as the master verified it
    files: dict[str, Any]  # that manifest's file list: name -> size and sha256


_held: dict[tuple[str, int], Held] = {}


def hold_all(root: Path, *, signing_key: Any = None, backend: Callable[[str], str] = runtime.BackendChoice(),
             prepare: Callable[[runtime.LoadedModel], None] | None = None) -> int:
    """Load, prepare and open a session for every version under ``root``; return how many are held.

    Run in the master before it forks, and again on HUP: versions held already are verified again
    (with the keys as reloaded) and let go if they no longer verify, changed, or are gone. A version
    that fails here is left to the workers, which refuse it and report it as they always do.
    """
    threads, on_disk = _threads(), set()
    for name in artifacts.list_models(root):
        for version in artifacts.list_versions(root, name):
            on_disk.add((name, version))
            held = _held.get((name, version))
            if held is not None and not _still_good(root, name, version, held, signing_key, backend(name)):
                del _held[(name, version)]
            if (name, version) not in _held:
                _hold(root, name, version, signing_key, backend(name), prepare)
    for gone in set(_held) - on_disk:
        del _held[gone]
    if _threads() > threads:  # a native library started a thread: it would be missing from every worker
        for held in _held.values():
            held.model.release_session()
        log.error("a thread started while the master loaded model versions; each worker opens its own ONNX "
                  "Runtime sessions", extra={"threads": _threads(), "before": threads})
    return len(_held)


def _hold(root: Path, name: str, version: int, signing_key: Any, backend: str,
          prepare: Callable[[runtime.LoadedModel], None] | None) -> None:
    folder = artifacts.version_dir(root, name, version)
    try:
        digest = _manifest_sha256(folder)
        model = runtime.load(folder, name=name, version=version, signing_key=signing_key, backend=backend)
        if digest != _manifest_sha256(folder):  # replaced while it loaded: the workers sort it out
            return
        if model.backend == runtime.ONNX:
            model.share_session()  # before prepare, whose measurement predicts through it
        if prepare is not None:
            prepare(model)
    except Exception:  # the worker loads it again and reports what is wrong the usual way
        log.info("model version left to the workers", extra={"model": name, "version": version}, exc_info=True)
        return
    _held[(name, version)] = Held(model, backend, digest, model.manifest["files"])


def _still_good(root: Path, name: str, version: int, held: Held, signing_key: Any, backend: str) -> bool:
    import sklearn  # imported by the versions held already; not at import, so a batch run never loads it

    folder = artifacts.version_dir(root, name, version)
    try:
        artifacts.verify_version(folder, expected_name=name, expected_version=version, signing_key=signing_key,
                                 sklearn_version=sklearn.__version__)
        return held.backend == backend and hmac.compare_digest(_manifest_sha256(folder), held.manifest_sha256)
    except (ArtifactError, OSError):
        return False


def take(folder: Path, *, name: str, version: int, backend: str = runtime.AUTO) -> runtime.LoadedModel | None:
    """Return the master's copy of this version if the folder still holds the very files it verified.

    The master checked the manifest (its signature included) with the same keys; the worker
    checks that manifest.json is byte for byte the one the master verified and hashes every file
    again, without parsing the manifest anew (that would copy pages the master shares). A
    different manifest or backend: None, and the worker loads the version itself. Raises
    ``ArtifactError`` when a file no longer matches.
    """
    held = _held.get((name, version))
    if held is None or held.backend != backend:
        return None
    try:
        same = hmac.compare_digest(_manifest_sha256(folder), held.manifest_sha256)
    except OSError:
        return None  # no manifest any more: the worker's own load says so
    if not same:
        return None
    artifacts.check_files(folder, held.files)
    return held.model


def _manifest_sha256(folder: Path) -> str:
    return hashlib.sha256((folder / artifacts.MANIFEST).read_bytes()).hexdigest()


def held() -> int:
    """How many versions this process holds from before the fork."""
    return len(_held)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1

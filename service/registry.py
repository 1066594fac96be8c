"""The registry's mutable state on disk: labels and an append-only history per model.

``<root>/<model>/registry.json`` is changed only through ``update``: under an exclusive file
lock (so two processes changing it at once lose nothing), written to a temp file and renamed
(so readers never see half a file), with every change appended to ``history``. No Flask.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service import artifacts
from service.errors import ArtifactError

LABEL_RE = re.compile(r"[a-z0-9_-]{1,64}")
PRODUCTION = "production"
LOCK_FILE = ".registry.lock"


def check_label(label: str) -> str:
    """Return ``label`` when it is a legal label name, else raise ``ValueError``."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise ValueError("labels match [a-z0-9_-]{1,64}")
    return label


def empty_state() -> dict[str, Any]:
    return {"labels": {}, "history": []}


def read_state(root: Path, name: str) -> dict[str, Any]:
    """Read a model's registry state; a missing file is an empty state."""
    path = artifacts.model_dir(root, name) / artifacts.REGISTRY_FILE
    try:
        with open(path, "rb") as fh:
            state = json.loads(fh.read())
    except FileNotFoundError:
        return empty_state()
    except ValueError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("labels", {}), dict) \
            or not isinstance(state.get("history", []), list):
        raise ArtifactError(f"{path} is not a registry state (an object with labels and history)")
    state.setdefault("labels", {})
    state.setdefault("history", [])
    return state


@contextlib.contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    folder = artifacts.model_dir(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update(root: Path, name: str, change: Callable[[dict[str, Any]], dict[str, Any]], *,
           actor: str, reason: str = "") -> dict[str, Any]:
    """Apply ``change`` to the state under the lock and record what it returned in the history.

    ``change`` mutates the state it is given and returns the history entry's details (at
    least ``action``); it raises to refuse the change, leaving the file untouched.
    """
    with _locked(root, name):
        state = read_state(root, name)
        entry = change(state)
        entry = {"at": _now(), "actor": actor, **entry, "reason": reason}
        state["history"].append(entry)
        artifacts.write_json_atomic(artifacts.model_dir(root, name) / artifacts.REGISTRY_FILE, state)
        return entry


def set_label(root: Path, name: str, label: str, version: int, *, actor: str, reason: str = "",
              signing_key: str | None = None) -> dict[str, Any]:
    """Point ``label`` at ``version`` after checking that version's files on disk."""
    check_label(label)
    folder = artifacts.version_dir(root, name, version)
    if not folder.is_dir():
        raise ValueError(f"model {name!r} has no version {version}")
    artifacts.verify_version(folder, expected_name=name, expected_version=int(version), signing_key=signing_key)

    def change(state: dict[str, Any]) -> dict[str, Any]:
        previous = state["labels"].get(label)
        state["labels"][label] = int(version)
        return {"action": "label.set", "label": label, "version": int(version), "previous": previous}

    return update(root, name, change, actor=actor, reason=reason)


def remove_label(root: Path, name: str, label: str, *, actor: str, reason: str = "") -> dict[str, Any]:
    """Remove ``label``; raise ``ValueError`` when the model does not have it."""
    check_label(label)

    def change(state: dict[str, Any]) -> dict[str, Any]:
        if label not in state["labels"]:
            raise ValueError(f"model {name!r} has no label {label!r}")
        return {"action": "label.remove", "label": label, "previous": state["labels"].pop(label)}

    return update(root, name, change, actor=actor, reason=reason)


def record_packaged(root: Path, manifest: dict[str, Any], *, actor: str) -> dict[str, Any]:
    """Record a new version in the history; the first version of a model becomes ``production``."""

    def change(state: dict[str, Any]) -> dict[str, Any]:
        entry = {"action": "version.packaged", "version": manifest["version"]}
        if PRODUCTION not in state["labels"]:
            state["labels"][PRODUCTION] = manifest["version"]
            entry["label"] = PRODUCTION
        return entry

    return update(root, manifest["name"], change, actor=actor, reason=manifest.get("changelog", ""))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

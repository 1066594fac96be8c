"""What changes in meaning between two versions of a model: task, classes, features.

A caller holding the production version's manifest asks whether a new one answers the same
question: same task, same classes, the same features with the same types. The differences are
plain data for the manifest and the history; whether to refuse is the caller's decision.
Reads manifests only; writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.errors import ArtifactError
from service.models import artifacts


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Return what ``after`` changes relative to ``before`` (empty lists when nothing does)."""
    old = {f["name"]: f for f in before.get("input", {}).get("features", [])}
    new = {f["name"]: f for f in after.get("input", {}).get("features", [])}
    old_classes = before.get("output", {}).get("classes") or []
    new_classes = after.get("output", {}).get("classes") or []
    changes: dict[str, Any] = {
        "against_version": before.get("version"),
        "task": [before.get("task"), after.get("task")] if before.get("task") != after.get("task") else None,
        "features_added": [n for n in new if n not in old],
        "features_removed": [n for n in old if n not in new],
        "features_retyped": [{"name": n, "from": old[n]["type"], "to": new[n]["type"]}
                             for n in new if n in old and old[n]["type"] != new[n]["type"]],
        "features_reordered": [n for n in new if n in old] != [n for n in old if n in new],
        "classes_added": [c for c in new_classes if c not in old_classes],
        "classes_removed": [c for c in old_classes if c not in new_classes],
    }
    changes["breaking"] = reasons(changes)
    return changes


def reasons(changes: dict[str, Any]) -> list[str]:
    """Say, one phrase each, why ``changes`` alter what the model means (an empty list: they do not).

    A new task, new or lost classes, a different feature set or order: the same request would
    be read or answered differently. A retyped feature is recorded, not refused.
    """
    said = []
    if changes.get("task"):
        said.append(f"task {changes['task'][0]} -> {changes['task'][1]}")
    for key, words in (("features_added", "features added"), ("features_removed", "features removed"),
                       ("classes_added", "classes added"), ("classes_removed", "classes removed")):
        if changes.get(key):
            said.append(f"{words}: {', '.join(map(str, changes[key]))}")
    if changes.get("features_reordered"):  # rows sent in schema order would feed the wrong columns
        said.append("feature order changed")
    return said


def notes(changes: dict[str, Any]) -> list[str]:
    """Changes worth telling that keep the meaning: a feature's type."""
    return [f"feature {r['name']} retyped {r['from']} -> {r['to']}" for r in changes.get("features_retyped", [])]


def between_versions(root: Path, name: str, previous: int | None, version: int) -> list[str]:
    """Why moving a label from ``previous`` to ``version`` changes meaning (empty: it does not)."""
    if previous is None or previous == version:
        return []
    try:
        before = artifacts.read_manifest(artifacts.version_dir(root, name, previous))
    except (ArtifactError, OSError):
        return []  # the old version is gone or broken: there is no meaning left to keep
    return compare(before, artifacts.read_manifest(artifacts.version_dir(root, name, version)))["breaking"]

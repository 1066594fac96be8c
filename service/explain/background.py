"""Reference rows rebuilt from a manifest's reference profile, for baselines and global importance.

The profile keeps each numeric feature's raw sample and each categorical feature's frequencies,
not whole rows, so a reference row draws every feature independently (a seeded draw: the same
manifest always gives the same rows). That is the interventional baseline the model-agnostic
method and the linear base value need. No Flask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.models.artifacts import NUMERIC_TYPES

SEED = 0


def reference_rows(manifest: dict[str, Any], n: int) -> dict[str, np.ndarray] | None:
    """Return ``n`` reference rows as columns, or None when the profile cannot give a value for every feature."""
    profile = (manifest.get("reference_profile") or {}).get("features") or {}
    rng = np.random.default_rng(SEED)
    columns = {}
    for feature in manifest["input"]["features"]:
        values = _draw(feature, profile.get(feature["name"]) or {}, rng, n)
        if values is None:
            return None
        columns[feature["name"]] = values
    return columns


def _draw(feature: dict[str, Any], entry: dict[str, Any], rng: np.random.Generator, n: int) -> np.ndarray | None:
    if feature["type"] in NUMERIC_TYPES:
        sample = entry.get("sample")
        if not sample:
            return None
        values = rng.choice(np.asarray(sample, dtype=np.float64), n)
        return np.round(values) if feature["type"] == "int" else values
    categories = entry.get("categories")
    if not categories:
        return None
    keys = list(categories)
    weights = np.asarray([categories[k] for k in keys], dtype=np.float64)
    picked = rng.choice(len(keys), n, p=weights / weights.sum())
    native = [_native(key, feature) for key in keys]
    out = np.empty(n, dtype=object)
    out[:] = [native[i] for i in picked]
    return out


def _native(key: str, feature: dict[str, Any]) -> Any:
    """The profile stores category keys as text; give them back in the schema's own type."""
    if feature["type"] == "bool":
        return key == "true"
    for category in feature.get("categories") or ():
        if str(category) == key:
            return category
    return key

"""Reference rows rebuilt from a manifest's reference profile, for baselines and global importance.

The profile keeps each numeric feature's raw sample and each categorical feature's frequencies,
not whole rows, so a reference row draws every feature independently (a seeded draw: the same
manifest always gives the same rows). That is the interventional baseline the model-agnostic
method and the linear base value need. A personal-data feature has no raw sample: a numeric one
is drawn uniformly inside its (rounded) bins; a categorical one keyed by salted hash takes its
values from the fitted encoder's own categories whose hashes the profile lists. Those values stay
in memory as a baseline and are never part of an answer. No Flask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.models import pii
from service.models.artifacts import NUMERIC_TYPES
from service.models.schema_inference import read_model

SEED = 0


def reference_rows(manifest: dict[str, Any], n: int, estimator: Any = None) -> dict[str, np.ndarray] | None:
    """Return ``n`` reference rows as columns, or None when the profile cannot give a value for every feature.

    ``estimator`` (the fitted model) supplies the values behind hashed personal-data categories.
    """
    profile = (manifest.get("reference_profile") or {}).get("features") or {}
    rng = np.random.default_rng(SEED)
    columns = {}
    known: dict[str, list[Any]] | None = None
    for feature in manifest["input"]["features"]:
        entry = profile.get(feature["name"]) or {}
        if entry.get("salt") and estimator is not None:
            known = read_model(estimator).categories if known is None else known
            entry = _unhashed(entry, known.get(feature["name"]) or [])
        values = _draw(feature, entry, rng, n)
        if values is None:
            return None
        columns[feature["name"]] = values
    return columns


def _draw(feature: dict[str, Any], entry: dict[str, Any], rng: np.random.Generator, n: int) -> np.ndarray | None:
    if feature["type"] in NUMERIC_TYPES:
        sample = entry.get("sample")
        if sample:
            values = rng.choice(np.asarray(sample, dtype=np.float64), n)
        elif entry.get("pii") and entry.get("bin_edges"):
            values = _within_bins(entry, rng, n)
        else:
            return None
        return np.round(values) if feature["type"] == "int" else values
    categories = entry.get("categories")
    if not categories or entry.get("salt"):  # hashed keys no encoder could name
        return None
    keys = list(categories)
    weights = np.asarray([categories[k] for k in keys], dtype=np.float64)
    picked = rng.choice(len(keys), n, p=weights / weights.sum())
    native = keys if entry.get("native") else [_native(key, feature) for key in keys]
    out = np.empty(n, dtype=object)
    out[:] = [native[i] for i in picked]
    return out


def _within_bins(entry: dict[str, Any], rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw a bin by its share, then a value uniformly inside it (a lone edge is the value itself)."""
    edges = np.asarray(entry["bin_edges"], dtype=np.float64)
    if len(edges) < 2:
        return np.full(n, edges[0])
    weights = np.asarray(entry["frequencies"], dtype=np.float64)
    picked = rng.choice(len(weights), n, p=weights / weights.sum())
    return rng.uniform(edges[picked], edges[picked + 1])


def _unhashed(entry: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    """A hashed profile entry keyed by the encoder's values whose hashes it lists (raw, in memory only)."""
    by_key = {pii.profile_key(entry["salt"], value): value for value in values}
    found = {by_key[key]: share for key, share in entry["categories"].items() if key in by_key}
    if not found and values:  # every category was too rare to profile: each known one alike
        found = {value: 1.0 / len(values) for value in values}
    return {**entry, "salt": None, "categories": found, "native": True}


def _native(key: str, feature: dict[str, Any]) -> Any:
    """The profile stores category keys as text; give them back in the schema's own type."""
    if feature["type"] == "bool":
        return key == "true"
    for category in feature.get("categories") or ():
        if str(category) == key:
            return category
    return key

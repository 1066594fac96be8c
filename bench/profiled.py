"""Any packaged model as a bench workload: rows drawn from its manifest's reference profile.

``python -m bench --model <m>`` copies ``<ARTIFACTS_DIR>/<m>`` (every version and its
registry's labels and rollout, so they resolve as in production) into the bench's scratch
folder, never serving or writing the real one, and measures the production version (else the
newest). The history is left behind: it names records of the real audit trail, which the bench's
throwaway stores refuse as not adopted; each of them anchors the copy as it is instead. Rows follow
the profile (``reference_profile.features`` in manifest.json, written by
``service.models.profile``): a numeric feature draws from its raw ``sample`` when there is one,
else picks a bin by frequency and a value uniformly inside it; a categorical feature draws a
category by its share. Values are kept inside the schema's min/max and categories, ints are
whole, and nothing is missing, so every row validates. A fixed seed gives the same bytes
every run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.workload import BATCH_SIZES, SEED, Scenario, request_body
from service.errors import ServiceError
from service.files import write_json_atomic
from service.models.registry_file import LAST_GOOD_FILE, REGISTRY_FILE, read_state
from service.models.rollout import PRODUCTION

NUMERIC = {"float", "int"}


class ModelNotFound(ServiceError):
    """The model asked for is not a packaged model in the artifacts folder."""

    status = 404
    code = "model_not_found"


def copy_model(source_root: Path, name: str, root: Path) -> int:
    """Copy one model folder into the bench's root; return the version to measure."""
    folder = source_root / name
    versions = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit() and (p / "manifest.json").is_file())
    if not versions:
        raise ModelNotFound(f"no packaged model {name!r} in {source_root} (looked for {folder}/<version>/manifest.json)")
    shutil.copytree(folder, root / name, ignore=shutil.ignore_patterns("*.lock", ".gc-*", REGISTRY_FILE, LAST_GOOD_FILE))
    try:
        state = read_state(source_root, name)
    except ServiceError:
        return versions[-1]
    write_json_atomic(root / name / REGISTRY_FILE, {**state, "history": []})
    production = state.get("labels", {}).get(PRODUCTION)
    return production if production in versions else versions[-1]


def manifest_of(root: Path, name: str, version: int) -> dict[str, Any]:
    return json.loads((root / name / str(version) / "manifest.json").read_text())


def category_value(key: str, feature: dict[str, Any]) -> Any:
    """A profile's category key (always a string) back as the value the schema expects."""
    for allowed in feature.get("categories") or []:
        if str(allowed).lower() == key.lower() or (isinstance(allowed, bool) and key == ("true" if allowed else "false")):
            return allowed
    if feature["type"] == "bool":
        return key == "true"
    if feature["type"] in NUMERIC:
        return int(float(key)) if feature["type"] == "int" else float(key)
    return key


def numeric_column(profile: dict[str, Any], feature: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    sample = profile.get("sample")
    if sample:
        values = rng.choice(np.asarray(sample, dtype=np.float64), size=n)
    elif profile.get("kind") == "numeric":
        edges = np.asarray(profile["bin_edges"], dtype=np.float64)
        if len(edges) < 2:
            values = np.full(n, edges[0] if len(edges) else 0.0)
        else:
            shares = np.asarray(profile["frequencies"], dtype=np.float64)
            bins = rng.choice(len(shares), size=n, p=shares / shares.sum())
            values = rng.uniform(edges[bins], edges[bins + 1])
    else:
        values = np.zeros(n)
    low, high = feature.get("min"), feature.get("max")
    values = np.clip(values, -np.inf if low is None else low, np.inf if high is None else high)
    if feature["type"] == "int":
        return np.round(values).astype(np.int64)
    return values


def categorical_column(profile: dict[str, Any], feature: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
    shares = dict(profile.get("categories") or {})
    if not shares:  # an empty profile: any allowed category will do
        shares = {str(c): 1.0 for c in feature.get("categories") or ["a"]}
    keys = list(shares)
    weights = np.asarray([shares[k] for k in keys], dtype=np.float64)
    picks = rng.choice(len(keys), size=n, p=weights / weights.sum())
    values = [category_value(k, feature) for k in keys]
    return [values[i] for i in picks]


def profile_rows(manifest: dict[str, Any], n: int, seed: int = SEED) -> pd.DataFrame:
    """``n`` rows in schema order drawn from the manifest's reference profile."""
    profiles = (manifest.get("reference_profile") or {}).get("features") or {}
    if not profiles:
        raise ModelNotFound(f"{manifest.get('name')} version {manifest.get('version')} has no reference_profile "
                            "in its manifest to draw rows from (package it with reference data)")
    rng = np.random.default_rng(seed)
    columns = {}
    for feature in manifest["input"]["features"]:
        profile = profiles.get(feature["name"], {})
        numeric = feature["type"] in NUMERIC and profile.get("kind") != "categorical"
        columns[feature["name"]] = (numeric_column if numeric else categorical_column)(profile, feature, n, rng)
    return pd.DataFrame(columns)


def scenarios_for(root: Path, name: str, version: int, sizes: tuple[int, ...] = BATCH_SIZES) -> list[Scenario]:
    """One plain-predict scenario per batch size for one version of one model."""
    pool = profile_rows(manifest_of(root, name, version), max(sizes))
    return [Scenario(name, rows, False, request_body(pool.head(rows)), pool.head(rows), version) for rows in sizes]

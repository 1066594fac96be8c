"""Input schema inference: what the fitted estimator knows first, the data second.

Reads ``feature_names_in_``, ``n_features_in_``, the encoders' ``categories_`` and which
columns meet an imputer (through ``Pipeline`` and ``ColumnTransformer``), merges that with
the reference data (the training CSV, else the hold-out), applies the user's schema and
records where each feature's type and categories came from. The hold-out only checks: a
value it holds that the model never saw is reported, not learned. Features flagged ``pii`` (and
the data subject, which always is) leave with their categories hashed and without a range the
data gave (``service.models.pii.protect``); notes about them count values, never list them.
Reads no files and writes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from service.models import artifacts, pii
from service.models.profile import MAX_CATEGORIES

FEATURE_TYPES = artifacts.FEATURE_TYPES
FEATURE_KEYS = ("type", "required", "nullable", "min", "max", "categories", "pii", "sensitive", "description")
ENCODERS = ("OneHotEncoder", "OrdinalEncoder", "TargetEncoder")
IMPUTERS = ("SimpleImputer", "KNNImputer", "IterativeImputer", "MissingIndicator")
#: Estimators that take NaN natively: every feature they see may be missing.
NAN_NATIVE = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
#: Steps that pass their columns through one to one, so what follows still sees them by name.
COLUMN_PRESERVING = IMPUTERS[:3] + ("FunctionTransformer",)


@dataclass
class FittedSchema:
    """What a fitted estimator says about its inputs."""

    names: list[str] | None
    count: int | None
    categories: dict[str, list[Any]] = field(default_factory=dict)
    nullable: set[str] = field(default_factory=set)
    nan_native: bool = False


@dataclass
class InferredSchema:
    """The merged schema, where each part came from, and what the hold-out check found."""

    features: list[dict[str, Any]]
    sources: dict[str, dict[str, str]]
    notes: list[str]


def read_model(model: Any) -> FittedSchema:
    """Collect feature names, count, encoder categories and imputed columns from a fitted model."""
    names = getattr(model, "feature_names_in_", None)
    schema = FittedSchema(names=[str(n) for n in names] if names is not None else None,
                          count=getattr(model, "n_features_in_", None))
    _walk(model, schema.names, schema)
    return schema


def _walk(step: Any, columns: list[str] | None, schema: FittedSchema) -> None:
    kind = type(step).__name__
    if kind == "Pipeline":
        for _, inner in step.steps:
            if inner in (None, "passthrough"):
                continue
            _walk(inner, columns, schema)
            if type(inner).__name__ not in COLUMN_PRESERVING:
                break  # later steps see transformed columns, not the request's features
    elif kind == "ColumnTransformer":
        known = [str(n) for n in getattr(step, "feature_names_in_", columns or [])]
        for _, inner, selected in getattr(step, "transformers_", []):
            if inner not in ("drop", "passthrough"):
                _walk(inner, _column_names(selected, known), schema)
    elif kind in NAN_NATIVE:
        schema.nan_native = True
    elif kind in ENCODERS and columns is not None and hasattr(step, "categories_"):
        for name, values in zip(columns, step.categories_, strict=False):
            seen = [_native(v) for v in values if not _is_missing(v)]
            if len(seen) < len(values):
                schema.nullable.add(name)
            schema.categories[name] = seen
    elif kind in IMPUTERS and columns is not None:
        schema.nullable.update(columns)


def _column_names(selected: Any, known: list[str]) -> list[str] | None:
    if isinstance(selected, str):
        return [selected]
    if isinstance(selected, slice):
        return known[selected] if known else None
    values = list(np.asarray(selected).ravel()) if not callable(selected) else []
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return [n for n, keep in zip(known, values, strict=False) if keep]
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        return [known[int(i)] for i in values] if known else None
    return [str(v) for v in values] or None


def feature_order(fitted: FittedSchema, names: list[str] | None, overrides: dict[str, Any] | None) -> list[str] | None:
    """Return the feature order: the model's own names, else ``names``, else a schema naming them all.

    Return None when nothing names the features (the caller decides whether data columns may).
    Raise ``ValueError`` when a given list contradicts the model.
    """
    declared = list((overrides or {}).get("features", overrides or {}))
    given = names or (declared if fitted.count is not None and len(declared) == fitted.count else None)
    if fitted.names is not None:
        if names and names != fitted.names:
            raise ValueError(f"--features names {', '.join(names)} but the model was fitted on "
                             f"{', '.join(fitted.names)}")
        return fitted.names
    if given is not None and fitted.count is not None and len(given) != fitted.count:
        raise ValueError(f"--features names {len(given)} features, the model expects {fitted.count}")
    return given


def declared_dtypes(fitted: FittedSchema, overrides: dict[str, Any] | None) -> dict[str, str]:
    """Map the columns that must be read as text (string categories, declared strings) to ``str``."""
    dtypes = {name: "str" for name, values in fitted.categories.items()
              if values and all(isinstance(v, str) for v in values)}
    for name, change in (overrides or {}).get("features", overrides or {}).items():
        kind = change.get("type") if isinstance(change, dict) else None
        if kind in ("string", "category"):
            dtypes[name] = "str"
        elif kind in ("float", "int"):
            dtypes[name] = "float64" if kind == "float" else "Int64"
    return dtypes


def infer_schema(model: Any, holdout: pd.DataFrame, *, reference: pd.DataFrame | None = None,
                 overrides: dict[str, Any] | None = None, names: list[str] | None = None,
                 strict_ranges: bool = False, salt: str | None = None,
                 subject: str | None = None) -> InferredSchema:
    """Build the ordered input schema: the model first, the reference data second, then ``overrides``.

    ``subject`` names the feature that identifies the data subject: it must be a feature and is
    always personal data. ``salt`` hashes the categories of personal-data features.
    """
    fitted = read_model(model)
    order = feature_order(fitted, names, overrides) or [str(c) for c in holdout.columns]
    if fitted.count is not None and fitted.count != len(order):
        raise ValueError(f"the model expects {fitted.count} features, the data offers {len(order)} columns")
    data, origin = (reference, "reference") if reference is not None else (holdout, "holdout")
    for frame, label in ((holdout, "--data"), (data, "--reference")):
        missing = [n for n in order if n not in frame.columns]
        if missing:
            raise ValueError(f"{label} lacks columns the model needs: {', '.join(missing)}")
    features, sources = [], {}
    for name in order:
        feature = column_feature(name, data[name], strict_ranges)
        source = {"type": origin, "categories": origin if feature["categories"] is not None else "none"}
        _apply_model(feature, source, fitted)
        features.append(feature)
        sources[name] = source
    features = apply_overrides(features, overrides or {})
    declared = (overrides or {}).get("features", overrides or {})
    for name in declared:
        sources[name] = {key: "schema" for key in sources[name]}
    if subject is not None:
        mark_subject(features, subject)
    salt = salt or pii.new_salt()
    for feature in features:
        pii.protect(feature, salt, declared=declared.get(feature["name"]) or ())
    return InferredSchema(features, sources, _check_holdout(features, holdout))


def mark_subject(features: list[dict[str, Any]], subject: str) -> None:
    """Flag the data-subject feature as personal data; ``ValueError`` when no feature has that name."""
    for feature in features:
        if feature["name"] == subject:
            feature["pii"] = True
            return
    raise ValueError(f"--subject {subject!r} is not a feature of the model (features: "
                     f"{', '.join(f['name'] for f in features)})")


def _apply_model(feature: dict[str, Any], source: dict[str, str], fitted: FittedSchema) -> None:
    name = feature["name"]
    if name in fitted.categories:
        values = fitted.categories[name]
        if values and all(isinstance(v, str) for v in values):
            feature["type"] = "category" if len(values) <= MAX_CATEGORIES else "string"
            feature["min"] = feature["max"] = None
            source["type"] = "model"
        if feature["type"] in ("category", "string"):  # numeric codes keep their numeric type and range
            feature["categories"] = sorted(values, key=str)
            source["categories"] = "model"
    if name in fitted.nullable or fitted.nan_native:
        feature["nullable"] = True
    feature["required"] = not feature["nullable"]


def column_feature(name: str, column: pd.Series, strict_ranges: bool) -> dict[str, Any]:
    """Infer one feature from a data column's dtype and values."""
    feature: dict[str, Any] = {"name": name, "required": True, "nullable": bool(column.isna().any()),
                               "min": None, "max": None, "categories": None, "pii": False, "sensitive": False,
                               "dtype": str(column.dtype)}
    present = column.dropna()
    if pd.api.types.is_bool_dtype(column):
        feature["type"] = "bool"
    elif pd.api.types.is_numeric_dtype(column):
        feature["type"] = "int" if pd.api.types.is_integer_dtype(column) else "float"
        if strict_ranges and len(present):
            feature["min"], feature["max"] = _native(present.min()), _native(present.max())
    else:
        values = sorted({_native(v) for v in present}, key=str)
        if len(values) <= MAX_CATEGORIES:
            feature["type"], feature["categories"] = "category", values
        else:
            feature["type"] = "string"
    feature["required"] = not feature["nullable"]
    return feature


def apply_overrides(features: list[dict[str, Any]], overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Merge a user's schema (``{"features": {name: {...}}}`` or ``{name: {...}}``) into the inferred one."""
    overrides = overrides.get("features", overrides)
    by_name = {f["name"]: f for f in features}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise ValueError(f"schema overrides name unknown features: {', '.join(unknown)}")
    for name, change in overrides.items():
        if not isinstance(change, dict):
            raise ValueError(f"schema override for {name!r} must be an object")
        bad = sorted(set(change) - set(FEATURE_KEYS))
        if bad:
            raise ValueError(f"schema override for {name!r} has unknown keys: {', '.join(bad)}")
        if "type" in change and change["type"] not in FEATURE_TYPES:
            raise ValueError(f"schema override for {name!r}: type must be one of {', '.join(FEATURE_TYPES)}")
        by_name[name].update(change)
        if "nullable" in change and "required" not in change:
            by_name[name]["required"] = not by_name[name]["nullable"]
    return features


def _check_holdout(features: list[dict[str, Any]], holdout: pd.DataFrame) -> list[str]:
    notes = []
    for feature in features:
        if feature["name"] not in holdout.columns:
            continue
        if pii.HASHED in feature:
            hashed = pii.categories_of(feature)
            outside = sum(v not in hashed for v in {_native(v) for v in holdout[feature["name"]].dropna()})
            if outside:
                notes.append(f"--data column {feature['name']!r} holds {outside} distinct values outside the "
                             "schema's categories (personal data: not listed)")
            continue
        if feature["categories"] is None:
            continue
        known = {str(v) for v in feature["categories"]}
        unseen = sorted({str(_native(v)) for v in holdout[feature["name"]].dropna()} - known)
        if unseen:
            notes.append(f"--data column {feature['name']!r} holds values outside the schema's categories: "
                         f"{', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}")
    return notes


def describe_sources(sources: dict[str, dict[str, str]]) -> list[str]:
    """One line per feature: where its type and its categories came from."""
    return [f"  {name}: type from {src['type']}, categories from {src['categories']}" for name, src in sources.items()]


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

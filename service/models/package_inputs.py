"""Gather what ``package`` is given on the command line into checked, typed inputs.

Loads the model (noting the scikit-learn that pickled it), the ``--schema`` JSON, the feature
names, and the CSVs read with the dtypes the model and the schema declare; runs
cross-validation when asked. Each failure is one ``ValueError`` line naming the file, column
or option. Evaluating, gating and writing are packaging's job, not this module's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from service.models import schema_inference
from service.models.csv_input import read_frame
from service.models.model_file import load_model
from service.models.packaging import task_of


@dataclass
class PackageInputs:
    """The model, its data and the options, ready for ``packaging.package_model``."""

    model: Any
    pickled_with: str
    X: pd.DataFrame
    y: pd.Series
    overrides: dict[str, Any] | None
    feature_names: list[str] | None
    reference: pd.DataFrame | None = None
    cv: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def read_schema(path: Path | None) -> dict[str, Any] | None:
    """Read a ``--schema`` file; a syntax error names the file, line and column."""
    if path is None:
        return None
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--schema {path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--schema {path}: not a UTF-8 text file") from None
    if not isinstance(schema, dict) or not isinstance(schema.get("features", schema), dict):
        raise ValueError(f"--schema {path}: expected an object {{feature: {{type, ...}}}} or {{\"features\": {{...}}}}")
    return schema


def read_inputs(model_path: Path, data: Path, target: str, *, schema_path: Path | None = None,
                feature_list: str | None = None, reference_path: Path | None = None,
                train_path: Path | None = None, folds: int | None = None) -> PackageInputs:
    """Load and check everything ``package`` was given, in the order a user would fix it."""
    overrides = read_schema(schema_path)
    loaded = load_model(model_path)
    try:
        task = task_of(loaded.model)
    except ValueError as exc:
        raise ValueError(f"--model {model_path}: {exc}") from None
    fitted = schema_inference.read_model(loaded.model)
    names = [n.strip() for n in feature_list.split(",") if n.strip()] if feature_list else None
    order = schema_inference.feature_order(fitted, names, overrides)
    if order is None:
        count = f"{fitted.count} " if fitted.count is not None else ""
        raise ValueError(f"--model {model_path} was fitted on an unnamed array of {count}features: name them "
                         "in order with --features a,b,c (or list every one in --schema)")
    dtypes = schema_inference.declared_dtypes(fitted, overrides)
    frame = _with_target(read_frame(data, dtypes, option="--data"), target, "--data", data)
    reference_file = reference_path or train_path
    reference = read_frame(reference_file, dtypes, option="--reference" if reference_path else "--train") \
        if reference_file else None
    cv = None
    if folds is not None:
        if train_path is None:
            raise ValueError("--cv needs --train: the CSV the clones are fitted on")
        from service.models.cross_validation import cross_validate

        train = _with_target(read_frame(train_path, dtypes, option="--train"), target, "--train", train_path)
        missing = [n for n in order if n not in train.columns]
        if missing:
            raise ValueError(f"--train {train_path} lacks columns the model needs: {', '.join(missing)}")
        cv = cross_validate(loaded.model, train[order], train[target], folds, task)
    return PackageInputs(loaded.model, loaded.pickled_with, frame.drop(columns=[target]), frame[target], overrides,
                         order, reference, cv, loaded.warnings)


def _with_target(frame: pd.DataFrame, target: str, option: str, path: Path) -> pd.DataFrame:
    if target not in frame.columns:
        raise ValueError(f"--target {target!r} is not a column of {path}")
    if frame[target].isna().any():
        raise ValueError(f"--target {target!r} has missing values in {option} {path}")
    return frame

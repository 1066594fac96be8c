"""Explain a past decision: read a logged prediction's stored inputs and explain them again.

The prediction log keeps each logged row's inputs (PII features hashed or dropped, see
``service.monitoring.privacy``) by prediction id. ``find`` reads one row back; ``explain_logged``
re-validates the stored values against the version that answered and explains them with it.
A feature whose value was never stored in the clear is named as withheld; the explanation goes
ahead without it only when the method gives each feature a contribution that depends on that
feature's value alone (linear models), and is refused with the reason otherwise. No Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from service.errors import Conflict, NotFound
from service.explain import explain, method_for
from service.explain.background import reference_rows
from service.serving.validation import validate_rows
from service.store.columns import python_values, read_column, read_inputs
from service.store.records import split_id

NEVER_STORED = "pii: never stored (no PII_HASH_KEY when it was logged)"
HASHED = "pii: stored only as a keyed hash, which cannot be read back"
MISSING = "not in the stored inputs (the row was logged under another schema)"
MAX_ID_CHARS = 128


class PredictionNotFound(NotFound):
    code, message = "prediction_not_found", "No logged prediction has this id."


class InputsNotStored(Conflict):
    """The logged row lacks values the explanation method needs (PII that was never stored)."""

    code, message = "inputs_not_stored", "The inputs this explanation needs were not stored."


@dataclass(frozen=True)
class Logged:
    """One logged prediction, read back."""

    id: str
    model: str
    version: int
    ts: float
    inputs: dict[str, Any]  # feature -> the stored value (a hash for hashed PII)
    output: Any


def find(store: Any, model: str, prediction_id: str) -> Logged:
    """Read one logged prediction of ``model`` and its stored inputs; 404 when there is none."""
    if not prediction_id or len(prediction_id) > MAX_ID_CHARS:
        raise PredictionNotFound(details={"model": model, "id": prediction_id[:MAX_ID_CHARS]})
    parsed = split_id(prediction_id)
    found = store.fetch("SELECT version, ts, rows, positions, features, inputs, outputs, arrays, arrays_ref"
                        " FROM prediction_batches WHERE model = ? AND base = ?", (model, parsed[0])) if parsed else []
    row = None
    if found:
        version, ts, rows, positions, names, inputs, outputs, arrays, ref = found[0]
        arrays = store.arrays_of(arrays, ref)
        if positions is None:
            row = parsed[1] if parsed[1] < rows else None
        else:
            stored = orjson.loads(positions)
            row = stored.index(parsed[1]) if parsed[1] in stored else None
    if row is None:  # unknown, not sampled, erased or purged
        raise PredictionNotFound(details={"model": model, "id": prediction_id})
    columns = dict(zip(orjson.loads(names), read_inputs(inputs, arrays), strict=True))
    outputs = read_column(outputs, arrays)
    return Logged(prediction_id, model, int(version), float(ts),
                  {name: _value(values, row) for name, values in columns.items() if values is not None and len(values) == rows},
                  _value(outputs, row) if outputs is not None and len(outputs) == rows else None)


def _value(values: list[Any] | np.ndarray, row: int) -> Any:
    """One stored value as JSON would have read it: a Python value, None for a missing (NaN) float."""
    return python_values(values[row:row + 1])[0]


def withheld(features: list[dict[str, Any]], logged: Logged) -> dict[str, str]:
    """Name each feature whose logged value cannot be used, with the reason."""
    out = {}
    for feature in features:
        name = feature["name"]
        if feature.get("pii"):
            out[name] = HASHED if name in logged.inputs else NEVER_STORED
        elif name not in logged.inputs:
            out[name] = MISSING
    return out


def explain_logged(model: Any, logged: Logged) -> dict[str, Any]:
    """Explain a logged prediction with ``model`` (the version that made it); 409 when values are missing.

    The answer has ``:explain``'s shape: ``explanation`` says what the numbers mean (here also
    whether every value was stored) and ``explanations`` holds the row's ``base`` and ``contributions``.
    """
    hidden = withheld(model.features, logged)
    method = method_for(model)
    if hidden and not method.additive:
        raise InputsNotStored(
            f"{', '.join(sorted(hidden))} of this prediction {'was' if len(hidden) == 1 else 'were'} not stored, and "
            f"{method.name} needs every value of the row to explain it.",
            details={"withheld": hidden, "method": method.name})
    kept = [f for f in model.features if f["name"] not in hidden]
    columns = validate_rows("columns", {f["name"]: [logged.inputs[f["name"]]] for f in kept}, kept,
                            vectorized_min_rows=2).columns if kept else {}
    if hidden:
        # any value will do: with an additive method it moves only its own (withheld) contribution
        filler = reference_rows(model.manifest, 1, model.estimator)
        if filler is None:
            raise InputsNotStored("Withheld features cannot be filled in: the manifest has no reference profile.",
                                  details={"withheld": hidden})
        columns.update({name: filler[name] for name in hidden})
    columns = {f["name"]: columns[f["name"]] for f in model.features}
    explained = explain(model, columns)
    contributions = explained.contributions.copy()
    for j, name in enumerate(explained.features):
        if name in hidden:
            contributions[:, j, :] = np.nan
    about = explained.summary() | {"complete": not hidden, "withheld": hidden}
    # the shape of an :explain answer, for its one row: clients read both with the same code
    return {"model": model.name, "version": model.version, "id": logged.id, "ts": _iso(logged.ts),
            "prediction": logged.output, "explanation": about,
            "explanations": replace(explained, contributions=contributions).items()}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

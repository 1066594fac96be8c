"""Every demo and bench model family answers the same on joblib and ONNX Runtime, to 1e-9, on the probes.

Each family of ``bench.parity`` is packaged once (parity measured at packaging), then loaded on
both backends; both answer the hold-out and the probes built from the model (rows at each split
threshold and one ulp either side, large-magnitude rows, missing values), sent through request
validation as a client's JSON would be. Classes must be identical; predictions and
probabilities within ``parity.TOLERANCE``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench import parity as families
from service.models import onnx_trees, parity, parity_probes
from service.serving import runtime
from service.serving.validation import validate_rows

EXACT = [name for name in families.FAMILIES if name not in families.JOBLIB]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """Each family fitted and packaged once; kept per name as (manifest, model, hold-out)."""
    root = tmp_path_factory.mktemp("families")
    return root, {name: families.package(name, root) for name in families.FAMILIES}


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON would carry them: Python numbers, null for a missing value (floats round-trip exactly)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: None if isinstance(v, float) and math.isnan(v) else (v.item() if hasattr(v, "item") else v)
                    for k, v in row.items()})
    return out


@pytest.mark.parametrize("name", EXACT)
def test_the_family_serves_through_onnx_within_1e_9_on_hold_out_and_probes(packaged, name):
    root, found = packaged
    manifest, model, holdout = found[name]
    report = manifest["backends"]["onnx"]
    assert report["status"] == "ok" and report["input_dtype"] == "double", report
    assert parity.passes(report) and report["parity"]["tolerance"] == 1e-9
    rows = report["parity"]["rows"]
    assert rows["holdout"] == len(holdout) and rows["magnitude"] > 0
    if onnx_trees.is_tree_model(model):
        assert report["graph"] == "tree_ensemble" and rows["threshold"] > 0

    folder = root / name / "1"
    fast = runtime.load(folder, name=name, version=1)
    slow = runtime.load(folder, name=name, version=1, backend="joblib")
    assert (fast.backend, slow.backend) == ("onnx", "joblib")
    probes, kinds = parity_probes.probes(model, holdout, fast.features)
    assert len(probes) > 0 and (not onnx_trees.is_tree_model(model) or "threshold" in set(kinds))
    frame = pd.concat([holdout, probes], ignore_index=True)
    columns = validate_rows("records", records(frame), fast.features, vectorized_min_rows=4).columns
    ours = fast.predict(columns, probabilities=fast.has_probabilities)
    theirs = slow.predict(columns, probabilities=slow.has_probabilities)
    if theirs.classes is not None:
        np.testing.assert_array_equal(ours.predictions, theirs.predictions)
        np.testing.assert_allclose(ours.probabilities, theirs.probabilities, rtol=0, atol=parity.TOLERANCE)
    else:
        np.testing.assert_allclose(ours.predictions, theirs.predictions, rtol=0, atol=parity.TOLERANCE)
    # and joblib is the estimator itself, bit for bit
    expected = model.predict(frame if hasattr(model, "feature_names_in_") else frame.to_numpy())
    np.testing.assert_array_equal(theirs.predictions, expected)


@pytest.mark.parametrize("name", sorted(families.JOBLIB))
def test_a_family_that_misses_1e_9_serves_with_joblib_and_says_why(packaged, name):
    root, found = packaged
    manifest, _model, _holdout = found[name]
    report = manifest["backends"]["onnx"]
    assert report["status"] == "failed" and not parity.passes(report)
    assert report["reason"] == parity.verdict(report["parity"])
    assert report["reason"].startswith("predictions differ from scikit-learn by up to ")
    assert runtime.load(root / name / "1", name=name, version=1).backend == "joblib"


def test_a_missing_integer_reaches_the_model_as_missing_not_as_minus_2_to_the_63(packaged):
    """A nullable int feature's null used to be cast to int64 (-2**63, with only a warning) before scikit-learn."""
    root, found = packaged
    _manifest, model, holdout = found["lr-onehot-imputer"]
    served = runtime.load(root / "lr-onehot-imputer" / "1", name="lr-onehot-imputer", version=1, backend="joblib")
    row = holdout.iloc[[0]].astype({"age": "float64"}).assign(age=np.nan)
    columns = validate_rows("records", records(row), served.features, vectorized_min_rows=4).columns
    answer = served.predict(columns, probabilities=True)
    np.testing.assert_array_equal(answer.probabilities, model.predict_proba(row))

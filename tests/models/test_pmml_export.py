"""PMML export: every demo and bench family converts, and a PMML evaluator agrees within 1e-9.

Real Java, real sklearn2pmml and a real JPMML-Evaluator. Java starts twice per conversion (the
converter, then the evaluator of the parity check), so the families are packaged once for the
module and their stored files scored again, independently of the packaging's own check, in one
shared evaluator.
"""

from __future__ import annotations

import sys

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn.base
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

from bench import models as bench_models
from service.models import artifacts, demo, pmml_export
from service.models.packaging import fingerprint, package_model
from tests.models.test_realistic_models import churn_frame, churn_pipeline

#: name -> what its pipeline holds; the first four are the demo and bench models themselves
FAMILIES = {
    "breast-cancer": "StandardScaler + LogisticRegression (demo)",
    "diabetes": "StandardScaler + Ridge (demo)",
    "random-forest": "RandomForestClassifier, 100 trees (bench)",
    "hist-gb": "HistGradientBoostingClassifier (bench)",
    "churn": "imputers, StandardScaler, OneHotEncoder on text codes + LogisticRegression, classes yes/no",
    "hgb-nan": "HistGradientBoostingRegressor on data with missing values",
}


def holdouts() -> dict[str, tuple[pd.DataFrame, pd.Series]]:
    """The hold-out rows each family is packaged with, built the way demo.py and bench/models.py split them."""
    found = {}
    for make in demo.DEMOS:
        spec = make()
        _, X, _, y = train_test_split(spec["X"], spec["y"], test_size=0.25, random_state=demo.SEED,
                                      stratify=spec["y"] if spec["stratify"] else None)
        found[spec["name"]] = (X, y)
    X, y = bench_models.synthetic_data()
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.25, random_state=bench_models.SEED, stratify=y)
    found[bench_models.FOREST] = found[bench_models.BOOSTED] = (X_test, y_test)
    return found


def missing_values_frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    frame.loc[rng.random(n) < 0.2, "b"] = np.nan
    frame["y"] = frame["a"] * 2 + frame["b"].fillna(0) + rng.normal(scale=0.1, size=n)
    return frame


@pytest.fixture(scope="module")
def java() -> str:
    path = pmml_export.java_path()
    if path is None:
        pytest.fail("no java: run `make system-deps` (apt-get install default-jre-headless)")
    return path


@pytest.fixture(scope="module")
def families(tmp_path_factory, java):
    """Every family packaged with --pmml into one root; returns the root and each family's hold-out."""
    root = tmp_path_factory.mktemp("pmml") / "artifacts"
    bench_models.train_all(root, pmml=True)
    found = holdouts()
    train, holdout = churn_frame(600, 1, rare=True), churn_frame(200, 2, rare=False)
    model = churn_pipeline().fit(train.drop(columns=["churn"]), train["churn"])
    package_model(model, "churn", root, holdout.drop(columns=["churn"]), holdout["churn"],
                  reference=train.drop(columns=["churn"]), pmml=True)
    found["churn"] = (holdout.drop(columns=["churn"]), holdout["churn"])
    train, holdout = missing_values_frame(3, 300), missing_values_frame(4, 150)
    model = HistGradientBoostingRegressor(random_state=0).fit(train[["a", "b"]], train["y"])
    package_model(model, "hgb-nan", root, holdout[["a", "b"]], holdout["y"], pmml=True)
    found["hgb-nan"] = (holdout[["a", "b"]], holdout["y"])
    return root, found


@pytest.fixture(scope="module")
def evaluator(java):
    with pmml_export.evaluator(java) as backend:
        yield backend


@pytest.mark.parametrize("name", FAMILIES)
def test_the_stored_pmml_answers_like_the_model_within_1e_9(families, evaluator, name):
    from jpmml_evaluator import make_evaluator

    root, found = families
    folder = artifacts.version_dir(root, name, 1)
    manifest = artifacts.verify_version(folder).manifest
    X, y = found[name]
    assert manifest["evaluation_data"]["sha256"] == fingerprint(X, y)["sha256"]  # the rows packaging checked
    report = manifest["exports"]["pmml"]
    assert report["status"] == "ok", report
    assert report["max_abs_diff"] <= 1e-9 and report["rows"] == len(X)
    assert manifest["files"]["model.pmml"] == artifacts.file_entry(folder / "model.pmml")
    # scored again here, column by column by name, rather than trusting the packaging's report
    model = joblib.load(folder / "model.joblib")
    results = make_evaluator(str(folder / "model.pmml"), backend=evaluator).evaluateAll(X.astype(object))
    assert "errors" not in results or results["errors"].isna().all()
    if manifest["task"] == "classification":
        assert results["y"].astype(str).tolist() == model.predict(X).astype(str).tolist()
        got = results[[f"probability({c})" for c in model.classes_]].to_numpy(dtype=float)
        diff = np.abs(got - model.predict_proba(X)).max()
    else:
        diff = np.abs(results["y"].to_numpy(dtype=float) - model.predict(X)).max()
    assert diff <= 1e-9, f"{name} ({FAMILIES[name]}): {diff:.3g}"


def test_a_scikit_learn_release_the_converter_does_not_support_is_named(java, monkeypatch):
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    model = LinearRegression().fit(X, [1.0, 2.0, 3.0, 4.0])
    # estimators record the release that pickles them: this pickle says 1.9.1, as it would under 1.9.1
    monkeypatch.setattr(sklearn.base, "__version__", "1.9.1")
    with pytest.raises(pmml_export.Refused) as refused:
        pmml_export.convert(model, ["a", "b"], java)
    assert str(refused.value) == ("Scikit-Learn version '1.9.1' is not supported (Upgrade the converter to the latest "
                                  "version, or downgrade Scikit-Learn to version '1.9.0')")


def test_without_the_converter_or_java_packaging_says_which_is_missing(tmp_path, monkeypatch):
    from tests.builders import fitted

    model, X, y = fitted()
    monkeypatch.setitem(sys.modules, "sklearn2pmml", None)  # what an environment without it looks like
    manifest = package_model(model, "m", tmp_path / "a", X, y, pmml=True)
    assert manifest["exports"]["pmml"] == {"status": "unsupported",
                                           "reason": "sklearn2pmml is not installed (it is in requirements-dev.txt)"}
    monkeypatch.delitem(sys.modules, "sklearn2pmml")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    manifest = package_model(model, "m", tmp_path / "b", X, y, pmml=True)
    assert manifest["exports"]["pmml"] == {"status": "unsupported",
                                           "reason": "java is not installed (make system-deps installs a JRE)"}
    assert "model.pmml" not in manifest["files"]

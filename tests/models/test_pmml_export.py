"""PMML export: every demo and bench family converts, and a PMML evaluator agrees within 1e-9.

Real Java, real sklearn2pmml and a real JPMML-Evaluator. Java starts twice per conversion (the
converter, then the evaluator of the parity check), so the families are packaged once for the
module and their stored files scored again, independently of the packaging's own check, in one
shared evaluator.
"""

from __future__ import annotations

import shutil
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn.base
from click.testing import CliRunner
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

from bench import models as bench_models
from service.cli import cli
from service.models import artifacts, demo, pmml_export
from service.models.packaging import fingerprint, package_model
from tests.builders import flip_byte
from tests.faulty_models import SumRegressor
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
    assert report["max_abs_diff"] <= 1e-9 and report["holdout_rows"] == len(X)
    assert report["probe_rows"] > 0 and report["rows"] == len(X) + report["probe_rows"]  # probes scored too
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


def run(root, *args):
    runner = CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None, "REQUIRE_MODEL_CARD": None})
    return runner.invoke(cli, [*args, "--artifacts-dir", str(root)])


def test_export_writes_the_stored_pmml_and_says_where(families, tmp_path, monkeypatch):
    root, _ = families
    out = tmp_path / "bc.pmml"
    result = run(root, "export", "breast-cancer", "1", "--format", "pmml", "--out", str(out))
    assert result.exit_code == 0, result.output
    stored = artifacts.version_dir(root, "breast-cancer", 1) / "model.pmml"
    assert out.read_bytes() == stored.read_bytes()
    assert result.stdout == f"exported breast-cancer version 1 as pmml to {out} (sha256 {artifacts.sha256_file(out)})\n"
    assert b"<PMML" in out.read_bytes()[:400]
    monkeypatch.chdir(tmp_path)
    result = run(root, "export", "diabetes", "1", "--format", "pmml")
    written = tmp_path / "exports" / "diabetes-1.pmml"
    assert result.exit_code == 0 and f" to {written} " in result.stdout and written.is_file()


def test_verify_and_export_refuse_a_tampered_pmml(families, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(families[0] / "diabetes", root / "diabetes")
    flip_byte(artifacts.version_dir(root, "diabetes", 1) / "model.pmml")
    result = run(root, "verify")
    assert result.exit_code == 1
    assert "FAILED  diabetes 1: file model.pmml does not match its sha256 in the manifest" in result.stdout
    result = run(root, "export", "diabetes", "1", "--format", "pmml", "--out", str(tmp_path / "d.pmml"))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "model.pmml" in result.stderr
    assert not (tmp_path / "d.pmml").exists()


def test_a_model_the_converter_does_not_know_is_refused_in_one_line(java, tmp_path):
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    X.assign(target=[1.5, 2.1, 3.2, 4.3]).to_csv(tmp_path / "data.csv", index=False)
    joblib.dump(SumRegressor().fit(X.to_numpy(), None), tmp_path / "sum.joblib")
    root = tmp_path / "artifacts"
    result = run(root, "package", "--model", str(tmp_path / "sum.joblib"), "--name", "sum", "--data",
                 str(tmp_path / "data.csv"), "--target", "target", "--features", "a,b", "--pmml")
    assert result.exit_code == 0, result.output
    reason = "The object (Python class tests.faulty_models.SumRegressor) is not a supported Estimator"
    assert f"sum version 1: no PMML recorded (unsupported): {reason}\n" in result.stderr
    manifest = artifacts.read_manifest(artifacts.version_dir(root, "sum", 1))
    assert manifest["exports"]["pmml"]["status"] == "unsupported" and "model.pmml" not in manifest["files"]
    result = run(root, "export", "sum", "1", "--format", "pmml", "--out", str(tmp_path / "s.pmml"))
    assert result.exit_code == 1
    assert result.stderr == f"Error: sum version 1 has no parity-checked PMML file (unsupported: {reason})\n"


def test_a_scikit_learn_release_the_converter_does_not_support_is_named(java, monkeypatch):
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    model = LinearRegression().fit(X, [1.0, 2.0, 3.0, 4.0])
    # estimators record the release that pickles them: this pickle says 1.9.1, as it would under 1.9.1
    monkeypatch.setattr(sklearn.base, "__version__", "1.9.1")
    with pytest.raises(pmml_export.Refused) as refused:
        pmml_export.convert(model, ["a", "b"], java)
    assert str(refused.value) == ("Scikit-Learn version '1.9.1' is not supported (Upgrade the converter to the latest "
                                  "version, or downgrade Scikit-Learn to version '1.9.0')")


def test_a_pmml_that_misses_parity_is_not_stored_and_packaging_says_why(java, tmp_path):
    # sums of products in another order round differently: on values near 1e11 that exceeds 1e-9
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 12)), columns=[f"x{i}" for i in range(12)])
    y = X.to_numpy() @ rng.normal(size=12) * 1e9 + 5e10
    joblib.dump(LinearRegression().fit(X, y), tmp_path / "big.joblib")
    X.assign(target=y).to_csv(tmp_path / "data.csv", index=False)
    root = tmp_path / "artifacts"
    result = run(root, "package", "--model", str(tmp_path / "big.joblib"), "--name", "big", "--data",
                 str(tmp_path / "data.csv"), "--target", "target", "--pmml")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "PMML" in line]
    assert len(lines) == 1 and lines[0].startswith("big version 1: no PMML recorded (failed): predictions differ by ")
    assert "(more than 1e-09, on values up to " in lines[0]
    manifest = artifacts.read_manifest(artifacts.version_dir(root, "big", 1))
    report = manifest["exports"]["pmml"]
    assert report["status"] == "failed" and report["max_abs_diff"] > 1e-9 and report["holdout_rows"] == 200
    assert "model.pmml" not in manifest["files"] and not (artifacts.version_dir(root, "big", 1) / "model.pmml").exists()


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

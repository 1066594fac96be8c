"""Models as people have them, packaged with the CLI, served in-process, equal to their own predictions.

A churn pipeline (string codes with leading zeros, a rare city, missing values, classes
yes/no), a HistGradientBoosting regressor with NaN, a random forest fitted on a bare array,
and a model whose pickle declares an older scikit-learn. Each failure the packaging issue
reported is replayed here.
"""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn.base
import sklearn.linear_model
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service.cli import cli
from service.models import artifacts, registry
from service.protocols import v1
from service.serving import inference
from service.serving.catalog import Catalog
from service.serving.inference import Limits, Target

OLD_SKLEARN = "1.3.2"


def churn_frame(n: int, seed: int, rare: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cities = ["sp", "rj", "bh"] if rare else ["sp", "rj"]
    weights = [0.5, 0.45, 0.05] if rare else [0.5, 0.5]
    frame = pd.DataFrame({
        "age": rng.normal(40, 10, n).round(1),
        "city": rng.choice(cities, n, p=weights),
        "region": rng.choice(["01", "02", "07"], n),
        "spend": rng.gamma(2.0, 50.0, n).round(2),
    })
    frame.loc[rng.random(n) < 0.1, "age"] = np.nan
    frame["churn"] = np.where((frame["spend"] < 80) ^ (frame["region"] == "07"), "yes", "no")
    return frame


def churn_pipeline() -> Pipeline:
    numbers = make_pipeline(SimpleImputer(), StandardScaler())
    codes = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="error"))
    prep = ColumnTransformer([("num", numbers, ["age", "spend"]), ("cat", codes, ["city", "region"])])
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))])


@pytest.fixture
def runner():
    return CliRunner(env={"MODEL_SIGNING_KEY": None, "ARTIFACTS_DIR": None, "REQUIRE_MODEL_CARD": None})


@pytest.fixture
def churn(tmp_path):
    train = churn_frame(600, 1, rare=True)
    train.to_csv(tmp_path / "train.csv", index=False)
    churn_frame(200, 2, rare=False).to_csv(tmp_path / "holdout.csv", index=False)  # no "bh" here
    model = churn_pipeline().fit(train.drop(columns=["churn"]), train["churn"])
    joblib.dump(model, tmp_path / "churn.joblib")
    return model, train


def package(runner, root, tmp_path, model_file, data="holdout.csv", target="churn", *extra, name="churn"):
    return runner.invoke(cli, ["package", "--model", str(tmp_path / model_file), "--name", name,
                               "--data", str(tmp_path / data), "--target", target,
                               "--artifacts-dir", str(root), *extra])


def serve(root, name, body):
    catalog = Catalog(root)
    catalog.refresh()
    request = v1.decode(body, Target(name), max_rows=1000)
    return inference.predict(catalog, request, Limits(max_rows=1000, vectorized_min_rows=10**9))


def records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def test_the_churn_pipeline_knows_its_rare_city_and_keeps_codes_as_text(runner, tmp_path, churn):
    model, train = churn
    root = tmp_path / "artifacts"
    result = package(runner, root, tmp_path, "churn.joblib", "holdout.csv", "churn",
                     "--reference", str(tmp_path / "train.csv"))
    assert result.exit_code == 0, result.output
    assert "city: type from model, categories from model" in result.stderr
    manifest = artifacts.read_manifest(artifacts.version_dir(root, "churn", 1))
    features = {f["name"]: f for f in manifest["input"]["features"]}
    assert features["city"]["categories"] == ["bh", "rj", "sp"]
    assert features["region"]["categories"] == ["01", "02", "07"]
    assert features["age"]["nullable"] and not features["age"]["required"]
    assert manifest["metrics"]["averaging"]["pos_label"] == "yes"
    rows = train.drop(columns=["churn"]).head(40)
    assert (rows["city"] == "bh").any()
    answer = serve(root, "churn", {"instances": records(rows)})
    assert list(answer.result.predictions) == list(model.predict(rows))


def test_an_omitted_nullable_feature_is_served_as_missing(runner, tmp_path, churn):
    model, train = churn
    root = tmp_path / "artifacts"
    assert package(runner, root, tmp_path, "churn.joblib").exit_code == 0
    rows = train.drop(columns=["churn"]).head(5)
    body = [{k: v for k, v in row.items() if k != "age"} for row in records(rows)]
    answer = serve(root, "churn", {"instances": body})
    assert list(answer.result.predictions) == list(model.predict(rows.assign(age=np.nan)))


def test_a_schema_declaring_a_string_makes_the_csv_keep_leading_zeros(runner, tmp_path):
    frame = pd.DataFrame({"x": np.arange(40.0), "branch": ["0012", "0345"] * 20, "y": [0, 1] * 20})
    frame.to_csv(tmp_path / "data.csv", index=False)
    model = make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(), ["branch"])], remainder="passthrough"),
        LogisticRegression()).fit(frame[["x", "branch"]].astype({"branch": object}), frame["y"])
    joblib.dump(model, tmp_path / "m.joblib")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"branch": {"type": "string"}}))
    result = package(runner, tmp_path / "a", tmp_path, "m.joblib", "data.csv", "y", "--schema", str(schema), name="b")
    assert result.exit_code == 0, result.output
    features = artifacts.read_manifest(artifacts.version_dir(tmp_path / "a", "b", 1))["input"]["features"]
    assert features[1]["type"] == "string" and features[1]["categories"] == ["0012", "0345"]


def test_a_hgb_regressor_with_nan_is_served_like_in_process(runner, tmp_path):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame.loc[rng.random(300) < 0.2, "b"] = np.nan
    frame["y"] = frame["a"] * 2 + frame["b"].fillna(0)
    model = HistGradientBoostingRegressor(max_iter=30).fit(frame[["a", "b"]], frame["y"])
    joblib.dump(model, tmp_path / "hgb.joblib")
    frame.to_csv(tmp_path / "data.csv", index=False)
    root = tmp_path / "artifacts"
    assert package(runner, root, tmp_path, "hgb.joblib", "data.csv", "y", name="hgb").exit_code == 0
    rows = frame[["a", "b"]].head(30)
    answer = serve(root, "hgb", {"instances": records(rows)})
    # the ONNX Runtime backend, when it serves, computes in float32
    np.testing.assert_allclose(answer.result.predictions, model.predict(rows), rtol=1e-5, atol=1e-5)


def test_a_forest_on_a_bare_array_needs_its_feature_names(runner, tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    joblib.dump(model, tmp_path / "rf.joblib")
    pd.DataFrame(X[:, ::-1], columns=["c", "b", "a"]).assign(y=y).to_csv(tmp_path / "data.csv", index=False)
    root = tmp_path / "artifacts"
    refused = package(runner, root, tmp_path, "rf.joblib", "data.csv", "y", name="rf")
    assert refused.exit_code == 1
    assert refused.stderr.strip().endswith("name them in order with --features a,b,c (or list every one in --schema)")
    assert "Traceback" not in refused.output
    result = package(runner, root, tmp_path, "rf.joblib", "data.csv", "y", "--features", "a,b,c", name="rf")
    assert result.exit_code == 0, result.output
    answer = serve(root, "rf", {"instances": X[:20].tolist()})
    assert list(answer.result.predictions) == list(model.predict(X[:20]))


def test_a_model_pickled_by_an_older_scikit_learn_is_recorded_as_such(runner, tmp_path, churn, monkeypatch):
    model, train = churn
    with monkeypatch.context() as patched:
        patched.setattr(sklearn.base, "__version__", OLD_SKLEARN)
        joblib.dump(model, tmp_path / "old.joblib")
    root = tmp_path / "artifacts"
    result = package(runner, root, tmp_path, "old.joblib")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "pickled by scikit-learn" in line]
    assert len(warned) == 1 and OLD_SKLEARN in warned[0]
    manifest = artifacts.read_manifest(artifacts.version_dir(root, "churn", 1))
    assert manifest["pickled_with"] == {"scikit-learn": OLD_SKLEARN}
    assert manifest["libraries"]["scikit-learn"] == sklearn.__version__
    # model.joblib was re-pickled here: the load check compares that, and the version serves
    rows = train.drop(columns=["churn"]).head(10)
    assert list(serve(root, "churn", {"instances": records(rows)}).result.predictions) == list(model.predict(rows))


def test_a_classifier_is_not_silently_the_next_version_of_a_regressor(runner, tmp_path, churn):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"age": rng.normal(size=50), "spend": rng.normal(size=50)})
    frame["churn"] = frame["age"] * 3.0
    joblib.dump(make_pipeline(StandardScaler(), sklearn.linear_model.LinearRegression()).fit(
        frame[["age", "spend"]], frame["churn"]), tmp_path / "reg.joblib")
    frame.to_csv(tmp_path / "reg.csv", index=False)
    root = tmp_path / "artifacts"
    assert package(runner, root, tmp_path, "reg.joblib", "reg.csv").exit_code == 0
    refused = package(runner, root, tmp_path, "churn.joblib")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "task regression -> classification" in refused.stderr and "features added: city, region" in refused.stderr
    assert "--breaking" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    accepted = package(runner, root, tmp_path, "churn.joblib", "holdout.csv", "churn", "--breaking")
    assert accepted.exit_code == 0, accepted.output
    changes = artifacts.read_manifest(artifacts.version_dir(root, "churn", 2))["compatibility"]
    assert changes["task"] == ["regression", "classification"] and changes["classes_added"] == ["no", "yes"]
    assert registry.read_state(root, "churn")["labels"]["production"] == 1

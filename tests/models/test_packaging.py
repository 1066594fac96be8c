import json
import multiprocessing
import re
import stat
import sys

import joblib
import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
import skl2onnx
import sklearn
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from service.errors import QualityGateFailed
from service.models import artifacts, onnx_export
from service.models.packaging import (
    Threshold,
    apply_overrides,
    check_quality_gate,
    evaluate,
    fingerprint,
    infer_features,
    package_model,
    task_of,
)
from service.serving import runtime

CLASSIFICATION_METRICS = {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}


class Stub:
    """Just enough of a fitted estimator for schema inference."""

    def __init__(self, names):
        self.feature_names_in_ = np.array(names, dtype=object)
        self.n_features_in_ = len(names)


def mixed_frame():
    return pd.DataFrame({
        "s": [f"user-{i}" for i in range(60)],
        "i": np.arange(60, dtype="int64") - 5,
        "f": [np.nan if i == 3 else i / 2 for i in range(60)],
        "b": [i % 2 == 0 for i in range(60)],
        "c": ["red", "green", "blue"] * 20,
        "k": pd.Series(["x", "y"] * 30, dtype="category"),
        "n": pd.Series([None if i == 0 else i for i in range(60)], dtype="Int64"),
    })


def classification_data():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
                      "n": [1, 2, 1, 2, 1, 2, 1, 2, 1, 2]})
    y = pd.Series([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    return X, y


def classifier():
    X, y = classification_data()
    return LogisticRegression().fit(X, y), X, y


# -- schema inference --------------------------------------------------------------------------


def test_infer_features_follows_feature_names_in_order_and_dtypes():
    data = mixed_frame()
    order = ["n", "k", "c", "b", "f", "i", "s"]
    features = infer_features(Stub(order), data)
    assert [f["name"] for f in features] == order
    by_name = {f["name"]: f for f in features}
    assert {n: f["type"] for n, f in by_name.items()} == {
        "s": "string", "i": "int", "f": "float", "b": "bool", "c": "category", "k": "category", "n": "int"}
    assert {n: f["nullable"] for n, f in by_name.items()} == {
        "s": False, "i": False, "f": True, "b": False, "c": False, "k": False, "n": True}
    assert by_name["c"]["categories"] == ["blue", "green", "red"]
    assert by_name["k"]["categories"] == ["x", "y"]
    assert by_name["s"]["categories"] is None
    assert by_name["i"]["dtype"] == "int64" and by_name["f"]["dtype"] == "float64"
    assert all(f["required"] is not f["nullable"] and not f["pii"] and not f["sensitive"] for f in features)
    # without strict ranges numbers are open-ended
    assert by_name["i"]["min"] is None and by_name["i"]["max"] is None


def test_infer_features_uses_the_data_columns_without_feature_names_in():
    data = mixed_frame()[["i", "f"]]
    features = infer_features(object(), data)
    assert [f["name"] for f in features] == ["i", "f"]


def test_strict_ranges_record_the_observed_range_ignoring_missing_values():
    by_name = {f["name"]: f for f in infer_features(Stub(["i", "f", "n", "c"]), mixed_frame(), strict_ranges=True)}
    assert (by_name["i"]["min"], by_name["i"]["max"]) == (-5, 54)
    assert type(by_name["i"]["min"]) is int
    assert (by_name["f"]["min"], by_name["f"]["max"]) == (0.0, 29.5)
    assert type(by_name["f"]["max"]) is float
    assert (by_name["n"]["min"], by_name["n"]["max"]) == (1, 59)
    assert by_name["c"]["min"] is None
    json.dumps(list(by_name.values()))  # native Python values only


def test_infer_features_refuses_missing_columns_and_wrong_feature_counts():
    with pytest.raises(ValueError, match="--data lacks columns the model needs: z"):
        infer_features(Stub(["i", "z"]), mixed_frame())
    stub = Stub(["i"])
    stub.n_features_in_ = 2
    with pytest.raises(ValueError, match="the model expects 2 features, the data offers 1 columns"):
        infer_features(stub, mixed_frame())


def test_overrides_merge_in_both_forms():
    features = infer_features(Stub(["i", "c"]), mixed_frame(), {"features": {"i": {"min": 0, "max": 10, "pii": True}}})
    assert features[0]["min"] == 0 and features[0]["max"] == 10
    assert features[0]["pii"] is True and features[0]["type"] == "int"
    features = infer_features(Stub(["i", "c"]), mixed_frame(), {"c": {"type": "string", "categories": None}})
    assert features[1]["type"] == "string" and features[1]["categories"] is None


@pytest.mark.parametrize("overrides, message", [
    ({"nope": {"min": 1}, "zzz": {}}, "schema overrides name unknown features: nope, zzz"),
    ({"features": {"i": {"colour": "red", "min": 1}}}, "schema override for 'i' has unknown keys: colour"),
    ({"i": {"type": "decimal"}}, "schema override for 'i': type must be one of float, int, bool, category, string"),
])
def test_overrides_reject_unknown_features_keys_and_types(overrides, message):
    features = infer_features(Stub(["i"]), mixed_frame())
    with pytest.raises(ValueError) as excinfo:
        apply_overrides(features, overrides)
    assert str(excinfo.value) == message
    assert features[0]["min"] is None and features[0]["type"] == "int"


# -- evaluation and the quality gate -----------------------------------------------------------


def test_task_of():
    assert task_of(LogisticRegression()) == "classification"
    assert task_of(LinearRegression()) == "regression"
    for not_a_model in (object(), {"predict": None}):
        with pytest.raises(ValueError, match="neither a scikit-learn classifier nor a regressor"):
            task_of(not_a_model)


def test_evaluate_binary_classification():
    model, X, y = classifier()
    result = evaluate(model, X, y, "classification")
    assert set(result) == CLASSIFICATION_METRICS
    assert result["accuracy"] == pytest.approx((model.predict(X) == y).mean())
    assert all(isinstance(v, float) for v in result.values())


def test_evaluate_multiclass_classification_uses_macro_averages():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 20.0, 21.0, 22.0]})
    y = pd.Series(["a", "a", "a", "b", "b", "b", "c", "c", "c"])
    model = DecisionTreeClassifier(random_state=0).fit(X, y)
    result = evaluate(model, X, y, "classification")
    assert set(result) == CLASSIFICATION_METRICS
    assert result["accuracy"] == 1.0 and result["f1"] == 1.0 and result["roc_auc"] == 1.0


def test_evaluate_regression():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    y = pd.Series([1.0, 3.0, 5.0, 7.0])
    model = LinearRegression().fit(X, y)
    result = evaluate(model, X, y + pd.Series([1.0, -1.0, 1.0, -1.0]), "regression")
    assert set(result) == {"rmse", "mae", "r2"}
    assert result["rmse"] == pytest.approx(1.0)
    assert result["mae"] == pytest.approx(1.0)


def test_threshold_parse():
    assert Threshold.parse("accuracy=0.9", "min") == Threshold("accuracy", "min", 0.9)
    assert Threshold.parse(" rmse = 65 ", "max") == Threshold("rmse", "max", 65.0)
    with pytest.raises(ValueError, match=r"expected METRIC=VALUE, got 'accuracy'"):
        Threshold.parse("accuracy", "min")
    with pytest.raises(ValueError, match=r"expected METRIC=VALUE, got '=0.9'"):
        Threshold.parse("=0.9", "min")
    with pytest.raises(ValueError, match=r"threshold for 'accuracy' is not a number"):
        Threshold.parse("accuracy=high", "min")


def test_thresholds_pass_at_the_boundary():
    assert Threshold("accuracy", "min", 0.9).passes(0.9)
    assert not Threshold("accuracy", "min", 0.9).passes(0.8999)
    assert Threshold("rmse", "max", 65).passes(65.0)
    assert not Threshold("rmse", "max", 65).passes(65.01)


def test_quality_gate_message_shows_measured_values_and_thresholds():
    measured = {"accuracy": 0.8, "f1": 0.75, "rmse": 70.123456}
    check_quality_gate(measured, [Threshold("accuracy", "min", 0.8), Threshold("rmse", "max", 71)])
    with pytest.raises(QualityGateFailed) as excinfo:
        check_quality_gate(measured, [Threshold("accuracy", "min", 0.9), Threshold("f1", "min", 0.5),
                                      Threshold("rmse", "max", 65)])
    assert str(excinfo.value) == (
        "quality gate failed: accuracy = 0.8000, required >= 0.9; rmse = 70.1235, required <= 65 "
        "(all measured: accuracy=0.8000, f1=0.7500, rmse=70.1235)")


def test_quality_gate_refuses_unknown_metrics():
    with pytest.raises(QualityGateFailed) as excinfo:
        check_quality_gate({"accuracy": 0.8}, [Threshold("auc", "min", 0.9)])
    assert str(excinfo.value) == "unknown metric(s) auc; measured: accuracy=0.8000"


def test_package_model_writes_nothing_when_the_gate_fails(tmp_path):
    model, X, y = classifier()
    with pytest.raises(QualityGateFailed, match=r"accuracy = \d\.\d{4}, required >= 1.01"):
        package_model(model, "gated", tmp_path, X, y, thresholds=[Threshold("accuracy", "min", 1.01)])
    assert artifacts.list_versions(tmp_path, "gated") == []


def test_fingerprint_identifies_the_data_by_content():
    _, X, y = classifier()
    a = fingerprint(X, y)
    assert re.fullmatch(r"[0-9a-f]{64}", a["sha256"])
    assert a["rows"] == 10 and a["columns"] == ["x", "n"]
    assert fingerprint(X.copy(), y.copy()) == a
    assert fingerprint(X, y.replace({0: 1, 1: 0}))["sha256"] != a["sha256"]


# -- writing versions --------------------------------------------------------------------------


def test_package_model_writes_versions_with_a_complete_manifest(tmp_path):
    model, X, y = classifier()
    first = package_model(model, "clf", tmp_path, X, y, description="d", changelog="c1",
                          cv={"folds": 2}, training_data={"source": "unit"})
    second = package_model(model, "clf", tmp_path, X, y, changelog="c2")
    assert (first["version"], first["parent_version"]) == (1, None)
    assert (second["version"], second["parent_version"]) == (2, 1)
    assert artifacts.list_versions(tmp_path, "clf") == [1, 2]
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["1", "2"]  # no staging left

    folder = tmp_path / "clf" / "1"
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == first
    for name in ("manifest.json", "model.joblib", "model.onnx"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o444
    assert on_disk["format_version"] == 1
    assert on_disk["name"] == "clf" and on_disk["task"] == "classification"
    assert on_disk["description"] == "d" and on_disk["changelog"] == "c1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", on_disk["created_at"])
    assert on_disk["estimator"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert on_disk["model_format"] == "joblib" and on_disk["model_file"] == "model.joblib"
    assert set(on_disk["libraries"]) == {"python", "scikit-learn", "numpy", "joblib", "pandas"}
    assert on_disk["libraries"]["scikit-learn"] == sklearn.__version__
    assert on_disk["files"] == {name: artifacts.file_entry(folder / name) for name in ("model.joblib", "model.onnx")}
    assert on_disk["backends"]["onnx"]["status"] == "ok"
    assert [f["name"] for f in on_disk["input"]["features"]] == ["x", "n"]
    assert [f["type"] for f in on_disk["input"]["features"]] == ["float", "int"]
    assert on_disk["input"]["feature_names_in"] is True
    assert on_disk["output"] == {"classes": [0, 1], "probabilities": True}
    assert set(on_disk["metrics"]["holdout"]) == CLASSIFICATION_METRICS
    assert on_disk["metrics"]["holdout_rows"] == 10 and on_disk["metrics"]["cv"] == {"folds": 2}
    assert on_disk["training_data"] == {"source": "unit"}
    assert on_disk["evaluation_data"] == fingerprint(X, y)
    assert set(on_disk["reference_profile"]["features"]) == {"x", "n"}
    assert on_disk["reference_profile"]["prediction"]["kind"] == "categorical"
    assert "signature" not in on_disk
    assert artifacts.verify_version(folder, expected_name="clf", expected_version=1).manifest == first
    assert type(joblib.load(folder / "model.joblib")) is LogisticRegression


def test_package_model_regression_manifest(tmp_path):
    X = pd.DataFrame({"x": np.linspace(0, 1, 20)})
    y = pd.Series(3 * X["x"] + 1)
    manifest = package_model(LinearRegression().fit(X, y), "reg", tmp_path, X, y,
                             thresholds=[Threshold("rmse", "max", 0.01), Threshold("r2", "min", 0.99)])
    assert manifest["task"] == "regression"
    assert manifest["output"] == {"classes": None, "probabilities": False}
    assert set(manifest["metrics"]["holdout"]) == {"rmse", "mae", "r2"}
    assert manifest["metrics"]["thresholds"] == [{"metric": "rmse", "kind": "max", "value": 0.01},
                                                 {"metric": "r2", "kind": "min", "value": 0.99}]
    assert manifest["reference_profile"]["prediction"]["kind"] == "numeric"


def test_package_model_signs_when_given_a_key(tmp_path):
    model, X, y = classifier()
    manifest = package_model(model, "signed", tmp_path, X, y, signing_key="k")
    assert manifest["signature"] == artifacts.sign_manifest(manifest, "k")
    artifacts.verify_version(tmp_path / "signed" / "1", signing_key="k")


def test_package_model_rejects_a_bad_name_before_writing(tmp_path):
    model, X, y = classifier()
    with pytest.raises(ValueError, match="model names match"):
        package_model(model, "../evil", tmp_path, X, y)
    assert list(tmp_path.iterdir()) == []


def test_a_model_trained_on_an_array_packages_with_the_data_column_names(tmp_path):
    _, X, y = classifier()
    model = LogisticRegression().fit(X.to_numpy(), y)
    assert not hasattr(model, "feature_names_in_")
    manifest = package_model(model, "bare", tmp_path, X, y)
    assert [f["name"] for f in manifest["input"]["features"]] == ["x", "n"]
    assert manifest["input"]["feature_names_in"] is False
    assert manifest["metrics"]["holdout"]["accuracy"] == pytest.approx((model.predict(X.to_numpy()) == y).mean())
    loaded = runtime.load(tmp_path / "bare" / "1", name="bare", version=1)
    served = loaded.predict({c: X[c].to_numpy() for c in X.columns}, probabilities=True)
    np.testing.assert_array_equal(served.predictions, model.predict(X.to_numpy()))
    np.testing.assert_allclose(served.probabilities, model.predict_proba(X.to_numpy()))
    assert manifest["backends"]["onnx"]["layout"] == "matrix" and loaded.backend == "onnx"


def test_package_model_stores_the_onnx_export_with_its_hash_and_parity_report(tmp_path):
    model, X, y = classifier()
    manifest = package_model(model, "clf", tmp_path, X, y)
    folder = tmp_path / "clf" / "1"
    assert manifest["files"]["model.onnx"] == artifacts.file_entry(folder / "model.onnx")
    assert manifest["content_sha256"] == artifacts.content_hash(manifest["files"])
    report = manifest["backends"]["onnx"]
    assert report["status"] == "ok" and report["reason"] is None
    assert report["rows"] == len(X) and 0 <= report["max_abs_diff"] <= 1e-9
    assert (report["layout"], report["input_dtype"]) == ("matrix", "double")  # numbers only: one input tensor
    assert report["libraries"] == {"skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__,
                                   "onnxruntime": onnxruntime.__version__}


def test_string_features_become_string_inputs_and_numbers_doubles(tmp_path):
    X = mixed_frame()[["i", "f", "b", "c"]].fillna({"f": 0.0})
    y = pd.Series((X["i"] > 20).astype("int64"))
    model = make_pipeline(make_column_transformer((StandardScaler(), ["i", "f", "b"]), (OneHotEncoder(), ["c"])),
                          LogisticRegression()).fit(X, y)
    manifest = package_model(model, "mixed", tmp_path, X, y)
    report = manifest["backends"]["onnx"]
    assert (report["status"], report["layout"], report["input_dtype"]) == ("ok", "columns", "double")
    graph = onnx.load_from_string((tmp_path / "mixed" / "1" / "model.onnx").read_bytes()).graph
    kinds = [i.type.tensor_type.elem_type for i in graph.input]
    assert kinds == [onnx.TensorProto.DOUBLE] * 3 + [onnx.TensorProto.STRING]


def test_packaging_never_fails_because_of_the_onnx_export(tmp_path, monkeypatch):
    def broken(*_args):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(onnx_export, "_convert", broken)
    model, X, y = classifier()
    manifest = package_model(model, "clf", tmp_path, X, y)
    report = manifest["backends"]["onnx"]
    assert report["status"] == "unsupported" and "RuntimeError: converter exploded" in report["reason"]
    assert set(manifest["files"]) == {"model.joblib"}
    assert sorted(p.name for p in (tmp_path / "clf" / "1").iterdir()) == ["manifest.json", "model.joblib"]
    assert runtime.load(tmp_path / "clf" / "1", name="clf", version=1).backend == "joblib"


def test_without_skl2onnx_packaging_records_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # what an environment without it looks like
    model, X, y = classifier()
    manifest = package_model(model, "clf", tmp_path, X, y)
    assert manifest["backends"]["onnx"] == {"status": "unsupported", "reason": "skl2onnx is not installed"}
    assert "model.onnx" not in manifest["files"]


def _package_many(root, barrier, queue, count):
    model, X, y = classifier()
    barrier.wait()
    queue.put([package_model(model, "race", root, X, y)["version"] for _ in range(count)])


def test_two_processes_packaging_at_once_get_distinct_versions(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, queue, count = context.Barrier(2), context.Queue(), 4
    workers = [context.Process(target=_package_many, args=(tmp_path, barrier, queue, count)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    versions = sorted(results[0] + results[1])
    assert versions == list(range(1, 2 * count + 1))
    assert artifacts.list_versions(tmp_path, "race") == versions
    assert [p.name for p in (tmp_path / "race").iterdir() if p.name.startswith(".")] == []
    for version in versions:
        manifest = artifacts.verify_version(tmp_path / "race" / str(version), expected_name="race",
                                            expected_version=version).manifest
        assert manifest["parent_version"] == (version - 1 or None)

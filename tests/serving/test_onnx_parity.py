"""ONNX Runtime answers like scikit-learn, on every demo model and on models of each kind we convert.

Each model is packaged (which converts it and checks parity on the hold-out and on probes), then
loaded twice, once per backend, and both answer the same fresh rows, validated as a request
would be, within ``parity.TOLERANCE`` (1e-9) on every output.
"""

from __future__ import annotations

import json
import shutil

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVR

from service.errors import ArtifactError, ConfigError
from service.models import artifacts, demo, onnx_export, parity
from service.models.packaging import package_model
from service.serving import runtime
from service.serving.catalog import Catalog
from service.serving.validation import validate_rows
from tests.builders import flip_byte

SEED = 7


def shop_data(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.Series]:
    X = pd.DataFrame({"age": rng.integers(18, 80, n).astype("int64"), "income": rng.normal(50, 15, n),
                      "city": rng.choice(["paris", "lyon", "nice"], n), "plan": rng.choice(["basic", "pro"], n)})
    score = (X["income"] - 50) / 15 + (X["city"] == "nice") - (X["plan"] == "basic") + rng.normal(0, 0.5, n)
    return X, pd.Series(np.select([score < -0.5, score < 0.7], ["leave", "stay"], "upgrade"))


def numeric_data(n: int, rng: np.random.Generator, *, missing: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    X = pd.DataFrame(rng.normal(size=(n, 20)), columns=[f"f{i}" for i in range(20)])
    if missing:
        X.loc[X.index % 7 == 0, "f3"] = np.nan
    signal = 3 * X["f0"] - 2 * X["f1"] + X["f2"].abs() + np.nan_to_num(X["f3"])
    return X, signal + rng.normal(0, 0.1, n)


def shop():
    return (make_pipeline(ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"])]),
                          LogisticRegression(max_iter=1000)), shop_data)


def forest():
    return RandomForestClassifier(n_estimators=30, random_state=SEED), \
        lambda n, rng: (lambda X, y: (X, (y > 0).astype("int64")))(*numeric_data(n, rng))


def boosted():
    return HistGradientBoostingRegressor(max_iter=50, random_state=SEED), \
        lambda n, rng: numeric_data(n, rng, missing=True)


def gradient():
    return GradientBoostingClassifier(n_estimators=40, random_state=SEED), \
        lambda n, rng: (lambda X, y: (X, (y > 0).astype("int64")))(*numeric_data(n, rng))


TEST_MODELS = {"shop": shop, "forest": forest, "boosted": boosted, "gradient": gradient}


@pytest.fixture(scope="module")
def test_root(tmp_path_factory):
    """Each test model fitted and packaged once: the hold-out is what packaging checks parity on."""
    root = tmp_path_factory.mktemp("onnx") / "artifacts"
    for name, make in TEST_MODELS.items():
        model, data = make()
        rng = np.random.default_rng(SEED)
        X, y = data(400, rng)
        model.fit(X[:300], y[:300])
        package_model(model, name, root, X[300:], y[300:])
    return root


def request_columns(model: runtime.LoadedModel, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The columns serving would hand the runtime for these rows sent as JSON records."""
    records = json.loads(frame.to_json(orient="records"))
    return validate_rows("records", records, model.features, vectorized_min_rows=4).columns


def both_backends(root, name: str) -> tuple[runtime.LoadedModel, runtime.LoadedModel]:
    folder = root / name / "1"
    fast = runtime.load(folder, name=name, version=1)
    slow = runtime.load(folder, name=name, version=1, backend="joblib")
    assert (fast.backend, slow.backend) == ("onnx", "joblib")
    return fast, slow


def assert_same_answers(fast: runtime.LoadedModel, slow: runtime.LoadedModel, frame: pd.DataFrame) -> None:
    columns = request_columns(slow, frame)
    ours = fast.predict(columns, probabilities=fast.has_probabilities)
    theirs = slow.predict(columns, probabilities=slow.has_probabilities)
    assert ours.predictions.dtype == theirs.predictions.dtype
    assert ours.classes == theirs.classes
    if theirs.classes is not None:
        np.testing.assert_array_equal(ours.predictions, theirs.predictions)
        np.testing.assert_allclose(ours.probabilities, theirs.probabilities, rtol=0, atol=parity.TOLERANCE)
    else:
        np.testing.assert_allclose(ours.predictions, theirs.predictions, rtol=0, atol=parity.TOLERANCE)


@pytest.mark.parametrize("name", ["breast-cancer", "diabetes"])
def test_every_demo_model_answers_alike_on_both_backends(demo_root, name):
    spec = demo.breast_cancer() if name == "breast-cancer" else demo.diabetes()
    manifest = json.loads((demo_root / name / "1" / artifacts.MANIFEST).read_text())
    assert manifest["backends"]["onnx"]["status"] == "ok"
    assert manifest["backends"]["onnx"]["input_dtype"] == "double"
    assert_same_answers(*both_backends(demo_root, name), spec["X"])


@pytest.mark.parametrize("name", list(TEST_MODELS))
def test_every_test_model_answers_alike_on_both_backends(test_root, name):
    report = json.loads((test_root / name / "1" / artifacts.MANIFEST).read_text())["backends"]["onnx"]
    assert report["status"] == "ok", report
    # double graphs only: trees through our TreeEnsemble builder, the rest through skl2onnx
    assert (report["input_dtype"], report["graph"]) == ("double", "skl2onnx" if name == "shop" else "tree_ensemble")
    assert report["max_abs_diff"] <= parity.TOLERANCE
    _model, data = TEST_MODELS[name]()
    fresh, _y = data(300, np.random.default_rng(SEED + 1))  # rows neither fitted on nor checked at packaging
    assert_same_answers(*both_backends(test_root, name), fresh)


def test_string_classes_come_back_as_the_models_own_values(test_root):
    fast, _slow = both_backends(test_root, "shop")
    X, _y = shop_data(50, np.random.default_rng(SEED + 2))
    answer = fast.predict(request_columns(fast, X), probabilities=True)
    assert answer.classes == ["leave", "stay", "upgrade"]
    assert set(answer.predictions.tolist()) <= {"leave", "stay", "upgrade"}
    np.testing.assert_allclose(answer.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_a_model_skl2onnx_cannot_convert_packages_and_serves_with_joblib(tmp_path):
    X, y = numeric_data(120, np.random.default_rng(SEED))
    manifest = package_model(KernelRidge(alpha=1.0).fit(X[:80], y[:80]), "kernel", tmp_path, X[80:], y[80:])
    report = manifest["backends"]["onnx"]
    assert report["status"] == "unsupported" and "KernelRidge" in report["reason"]
    assert set(manifest["files"]) == {"model.joblib"}
    assert not (tmp_path / "kernel" / "1" / "model.onnx").exists()
    for backend in ("auto", "onnx"):  # forcing ONNX without an export falls back to joblib
        model = runtime.load(tmp_path / "kernel" / "1", name="kernel", version=1, backend=backend)
        assert model.backend == "joblib"
        columns = request_columns(model, X[80:])
        np.testing.assert_allclose(model.predict(columns).predictions,
                                   model.estimator.predict(pd.DataFrame(columns)), rtol=1e-12)


def test_a_tampered_onnx_file_is_refused_before_anything_is_loaded(artifact_root, monkeypatch):
    loads = []
    monkeypatch.setattr(joblib, "load", lambda *a, **k: loads.append(a))  # runtime imports it when it unpickles
    monkeypatch.setattr(onnx_export, "session", lambda data: loads.append(data))
    folder = artifact_root / "breast-cancer" / "1"
    flip_byte(folder / onnx_export.ONNX_FILE)
    for backend in ("auto", "joblib", "onnx"):  # even a version that would not run it is refused
        with pytest.raises(ArtifactError, match="file model.onnx does not match its sha256 in the manifest"):
            runtime.load(folder, name="breast-cancer", version=1, backend=backend)
    assert loads == []


@pytest.mark.parametrize("change, message", [
    (lambda folder: (folder / "model.onnx").unlink(), "file model.onnx is missing"),
    (lambda folder: shutil.copy(folder / "model.onnx", folder / "model2.onnx"), "unexpected files not in the manifest"),
])
def test_onnx_files_must_be_exactly_those_the_manifest_lists(artifact_root, change, message):
    folder = artifact_root / "diabetes" / "1"
    change(folder)
    with pytest.raises(ArtifactError, match=message):
        runtime.load(folder, name="diabetes", version=1)


def test_onnx_bytes_swapped_after_verification_are_refused(artifact_root, monkeypatch):
    verify = artifacts.verify_version

    def verify_then_swap(folder, **kwargs):
        verified = verify(folder, **kwargs)
        flip_byte(folder / onnx_export.ONNX_FILE)  # lands between the check and the read
        return verified

    monkeypatch.setattr(artifacts, "verify_version", verify_then_swap)
    with pytest.raises(ArtifactError, match="model.onnx changed while it was being loaded"):
        runtime.load(artifact_root / "diabetes" / "1", name="diabetes", version=1)


def test_a_manifest_claiming_parity_without_the_file_is_refused(tmp_path):
    X, y = numeric_data(120, np.random.default_rng(SEED))
    package_model(KernelRidge().fit(X[:80], y[:80]), "kernel", tmp_path, X[80:], y[80:])
    folder = tmp_path / "kernel" / "1"
    manifest = json.loads((folder / artifacts.MANIFEST).read_text())
    manifest["backends"]["onnx"] = {"status": "ok", "layout": "matrix", "input_dtype": "double"}
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    with pytest.raises(ArtifactError, match="passed parity but does not list model.onnx"):
        runtime.load(folder, name="kernel", version=1)


def test_a_forced_backend_is_honoured_per_model(demo_root):
    catalog = Catalog(demo_root, poll_seconds=0, backend=runtime.BackendChoice.parse("auto", ("diabetes=joblib",)))
    catalog.refresh()
    assert catalog.resolve("breast-cancer").backend == "onnx"
    assert catalog.resolve("diabetes").backend == "joblib"
    everything = Catalog(demo_root, poll_seconds=0, backend=runtime.BackendChoice.parse("JOBLIB"))
    everything.refresh()
    assert {everything.resolve(name).backend for name in ("breast-cancer", "diabetes")} == {"joblib"}


def test_a_version_that_missed_parity_serves_with_joblib_unless_onnx_is_forced(tmp_path):
    """SVR converts only to a float graph (ai.onnx.ml's SVMRegressor): about 1e-5 off, so joblib serves."""
    X, y = numeric_data(300, np.random.default_rng(SEED))
    model = make_pipeline(StandardScaler(), SVR()).fit(X[:200], y[:200])
    manifest = package_model(model, "strict", tmp_path, X[200:], y[200:])
    report = manifest["backends"]["onnx"]
    assert report["status"] == "failed" and report["input_dtype"] == "float"
    assert report["reason"].startswith("predictions differ from scikit-learn by up to ")
    assert report["reason"].endswith("tolerance 1e-09)")
    assert report["max_abs_diff"] > parity.TOLERANCE and report["parity"]["outputs"]["predictions"]["where"]
    assert "model.onnx" in manifest["files"]  # kept for MODEL_BACKEND=onnx
    assert onnx_export.backend_line(manifest).startswith("backend joblib: the ONNX export misses parity: predictions")
    folder = tmp_path / "strict" / "1"
    served = runtime.load(folder, name="strict", version=1)
    assert served.backend == "joblib"
    assert served.serving() == {"backend": "joblib", "max_abs_diff": 0.0, "tolerance": 1e-9,
                                "onnx": {"status": "failed", "max_abs_diff": report["max_abs_diff"], "exact": False,
                                         "reason": report["reason"]}}
    forced = runtime.load(folder, name="strict", version=1, backend="onnx")
    assert forced.backend == "onnx" and forced.serving()["max_abs_diff"] == report["max_abs_diff"]
    assert forced.predict(request_columns(forced, X[200:])).predictions.dtype == np.float64


def test_a_manifest_from_before_exact_parity_serves_with_joblib(tmp_path, demo_root, caplog):
    """An older packaging said "ok" against looser tolerances and recorded no measurement: joblib is the safe answer."""
    shutil.copytree(demo_root / "diabetes", tmp_path / "diabetes")
    folder = tmp_path / "diabetes" / "1"
    manifest = json.loads((folder / artifacts.MANIFEST).read_text())
    report = manifest["backends"]["onnx"]
    older = {key: report[key] for key in ("status", "reason", "layout", "input_dtype", "rows")} | {"max_abs_diff": 1e-7}
    manifest["backends"]["onnx"] = older
    (folder / artifacts.MANIFEST).chmod(0o644)
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    with caplog.at_level("INFO", logger="service.serving.runtime"):
        model = runtime.load(folder, name="diabetes", version=1)
    assert model.backend == "joblib" and "before exact parity was measured" in caplog.text
    assert model.serving()["onnx"] == {"status": "ok", "max_abs_diff": None, "exact": False, "reason": None}
    assert runtime.load(folder, name="diabetes", version=1, backend="onnx").backend == "onnx"  # still on request
    manifest["backends"]["onnx"] = {**report, "parity": {**report["parity"], "tolerance": 1e-6}}
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    assert runtime.load(folder, name="diabetes", version=1).backend == "joblib"  # checked against a looser bar


@pytest.mark.parametrize("default, overrides", [("fast", ()), ("auto", ("diabetes",)), ("auto", ("diabetes=gpu",)),
                                                ("auto", ("../x=onnx",))])
def test_bad_backend_settings_are_config_errors(default, overrides):
    with pytest.raises(ConfigError, match="MODEL_BACKEND"):
        runtime.BackendChoice.parse(default, overrides)


def test_version_metadata_shows_the_backend(make_app):
    auto = make_app().test_client()
    assert auto.get("/v1/models/diabetes/versions/1").get_json()["backend"] == "onnx"
    forced = make_app(model_backends=("diabetes=joblib",)).test_client()
    assert forced.get("/v1/models/diabetes/versions/1").get_json()["backend"] == "joblib"
    assert forced.get("/v1/models/breast-cancer/versions/1").get_json()["backend"] == "onnx"

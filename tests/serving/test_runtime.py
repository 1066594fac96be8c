import json
import operator
import os
import pathlib
import shutil

import joblib
import numpy as np
import onnxruntime
import pandas as pd
import pytest
import sklearn
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from service.errors import ArtifactError, PredictionFailed
from service.models import artifacts, demo
from service.models.packaging import package_model
from service.serving import runtime
from tests import builders

PADDING = "A" * 4096


def package(root, name="m"):
    return builders.package(root, name)["version"]



class Payload:
    """Unpickling this touches ``marker``: what a malicious artifact could do instead."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        # (touch(marker), PADDING)[0]: the padding gives the test a harmless byte to flip
        return operator.getitem, ((_Touch(self.marker), PADDING), 0)


class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def replace_model_file(folder, obj):
    """Swap in another pickle and make the manifest vouch for it, as a packager would."""
    path = folder / artifacts.MODEL_FILE
    os.chmod(path, 0o644)
    joblib.dump(obj, path)
    os.chmod(path, 0o444)
    manifest = json.loads((folder / artifacts.MANIFEST).read_text())
    manifest["files"][artifacts.MODEL_FILE] = artifacts.file_entry(path)
    manifest["content_sha256"] = artifacts.content_hash(manifest["files"])
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest, mode=0o444)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "artifacts"


def test_an_untampered_payload_is_unpickled_control(root, tmp_path):
    marker = tmp_path / "control-marker"
    folder = root / "m" / str(package(root))
    replace_model_file(folder, Payload(marker))
    with pytest.raises(ArtifactError) as excinfo:
        runtime.load(folder, name="m", version=1)
    assert str(excinfo.value) == "model file holds a NoneType, not an estimator with predict()"
    assert marker.exists()  # verification passed, so the pickle ran: the payload is live


def test_a_flipped_byte_is_refused_before_unpickling(root, tmp_path):
    marker = tmp_path / "tampered-marker"
    folder = root / "m" / str(package(root))
    replace_model_file(folder, Payload(marker))
    path = folder / artifacts.MODEL_FILE
    data = bytearray(path.read_bytes())
    offset = data.index(PADDING.encode()) + len(PADDING) // 2
    data[offset] ^= 0x01  # "A" -> "@": still a valid pickle with the same payload
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))

    with pytest.raises(ArtifactError) as excinfo:
        runtime.load(folder, name="m", version=1)
    assert str(excinfo.value) == "file model.joblib does not match its sha256 in the manifest"
    assert not marker.exists()

    # the flipped file is still a working payload: only the hash check kept it from running
    assert joblib.load(path) is None
    assert marker.exists()


def test_load_refuses_a_folder_that_does_not_match_the_request(root):
    folder = root / "m" / str(package(root))
    with pytest.raises(ArtifactError, match="manifest names model 'm', folder is 'n'"):
        runtime.load(folder, name="n", version=1)
    with pytest.raises(ArtifactError, match="manifest says version 1, folder is 2"):
        runtime.load(folder, name="m", version=2)
    with pytest.raises(ArtifactError, match="not signed"):
        runtime.load(folder, name="m", version=1, signing_key="k")


def test_load_refuses_a_model_trained_with_another_scikit_learn(root):
    folder = root / "m" / str(package(root))
    manifest = json.loads((folder / artifacts.MANIFEST).read_text())
    manifest["libraries"]["scikit-learn"] = "0.23.0"
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    with pytest.raises(ArtifactError, match=r"trained with scikit-learn 0\.23\.0, this server runs"):
        runtime.load(folder, name="m", version=1)


def test_a_verified_file_that_is_not_a_pickle_is_an_artifact_error(root):
    folder = root / "m" / str(package(root))
    path = folder / artifacts.MODEL_FILE
    os.chmod(path, 0o644)
    path.write_bytes(b"this is not a pickle")
    manifest = json.loads((folder / artifacts.MANIFEST).read_text())
    manifest["files"][artifacts.MODEL_FILE] = artifacts.file_entry(path)
    manifest["content_sha256"] = artifacts.content_hash(manifest["files"])
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    with pytest.raises(ArtifactError, match=r"^model file could not be loaded: \w+"):
        runtime.load(folder, name="m", version=1)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    demo.train_demo(root)
    return root


def columns_of(frame):
    return {name: frame[name].to_numpy() for name in frame.columns}


def test_breast_cancer_predictions_equal_the_estimator(demo_root):
    model = runtime.load(demo_root / "breast-cancer" / "1", name="breast-cancer", version=1)
    assert model.name == "breast-cancer" and model.version == 1 and model.load_seconds > 0
    assert model.classes == [0, 1] and model.has_probabilities
    X = demo.breast_cancer()["X"].iloc[::7]
    assert [f["name"] for f in model.features] == list(X.columns)

    served = model.predict(columns_of(X), probabilities=True)
    np.testing.assert_array_equal(served.predictions, model.estimator.predict(X))
    # equal up to float rounding: BLAS may sum a column-built frame in another order
    np.testing.assert_allclose(served.probabilities, model.estimator.predict_proba(X), rtol=1e-12, atol=1e-15)
    assert served.classes == [0, 1]
    assert set(served.predictions.tolist()) == {0, 1}
    assert model.predict(columns_of(X)).probabilities is None


def test_diabetes_predictions_equal_the_estimator(demo_root):
    model = runtime.load(demo_root / "diabetes" / "1", name="diabetes", version=1)
    assert model.classes is None and not model.has_probabilities
    X = demo.diabetes()["X"].iloc[::5]
    served = model.predict(columns_of(X), probabilities=True)
    expected = model.estimator.predict(X)
    np.testing.assert_allclose(served.predictions, expected, rtol=1e-12)
    assert served.probabilities is None
    # validated integers may arrive as floats: the frame restores the training dtypes
    as_floats = {name: values.astype(float) for name, values in columns_of(X).items()}
    np.testing.assert_allclose(model.predict(as_floats).predictions, expected, rtol=1e-12)
    frame = model.frame(as_floats)
    assert str(frame["age"].dtype) == "int64" and str(frame["sex"].dtype) == "int64"


class Exploding:
    def predict(self, X):
        raise ValueError("boom")


def test_an_estimator_that_raises_gives_prediction_failed(root):
    folder = root / "m" / str(package(root))
    loaded = runtime.load(folder, name="m", version=1)
    broken = runtime.LoadedModel("m", 1, loaded.manifest, Exploding(), 0.0)
    with pytest.raises(PredictionFailed) as excinfo:
        broken.predict({"x": np.array([1.0])})
    assert excinfo.value.status == 500 and excinfo.value.code == "prediction_failed"
    assert excinfo.value.details == {"model": "m", "version": 1, "reason": "ValueError"}
    assert isinstance(excinfo.value.__cause__, ValueError)
    assert "boom" not in excinfo.value.message  # user code's message stays out of the response


class ConfigRecorder:
    """Remembers the scikit-learn settings in force while it predicts."""

    seen: list[dict] = []

    def predict(self, X):
        self.seen.append(sklearn.get_config())
        return np.zeros(len(X))


def test_scikit_learn_predicts_without_repeating_the_input_checks(root):
    folder = root / "m" / str(package(root))
    loaded = runtime.load(folder, name="m", version=1, backend="joblib")
    recorder = runtime.LoadedModel("m", 1, loaded.manifest, ConfigRecorder(), 0.0)
    recorder.predict({"x": np.array([1.0, 2.0])})
    assert ConfigRecorder.seen[-1]["assume_finite"] and ConfigRecorder.seen[-1]["skip_parameter_validation"]
    assert not sklearn.get_config()["assume_finite"]  # only for the call: the process default is back


def test_the_onnx_session_is_made_on_first_use_in_each_process(demo_root, monkeypatch):
    model = runtime.load(demo_root / "breast-cancer" / "1", name="breast-cancer", version=1)
    assert model.backend == "onnx" and model._session is None  # loading (perhaps in a master) makes none
    X = demo.breast_cancer()["X"].iloc[:3]
    model.predict(columns_of(X))
    session, inputs = model.session()
    assert model.session()[0] is session and inputs.names == ("X",)
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    monkeypatch.setattr(runtime.os, "getpid", lambda: -1)  # as seen from a forked child
    assert model.session()[0] is not session


def test_rows_with_a_missing_string_are_answered_by_scikit_learn(tmp_path, monkeypatch):
    X = pd.DataFrame({"x": np.linspace(0, 1, 40), "c": [None if i % 5 == 0 else "ab"[i % 2] for i in range(40)]})
    y = pd.Series(np.arange(40) % 2)
    model = make_pipeline(make_column_transformer(("passthrough", ["x"]), (OneHotEncoder(handle_unknown="ignore"), ["c"])),
                          LogisticRegression()).fit(X.fillna({"c": "?"}), y)
    manifest = package_model(model, "gaps", tmp_path, X, y)
    assert manifest["backends"]["onnx"]["status"] == "ok"
    assert manifest["backends"]["onnx"]["rows"] == 32  # parity is checked on the rows ONNX can take
    loaded = runtime.load(tmp_path / "gaps" / "1", name="gaps", version=1)
    assert loaded.backend == "onnx"
    runs = []
    real = runtime.LoadedModel._predict_onnx
    monkeypatch.setattr(runtime.LoadedModel, "_predict_onnx", lambda self, *args: runs.append(1) or real(self, *args))
    columns = {"x": X["x"].to_numpy(), "c": X["c"].to_numpy(dtype=object)}
    np.testing.assert_array_equal(loaded.predict(columns).predictions, model.predict(X))
    assert runs == []  # a null string cannot be a string tensor: ONNX never ran
    complete = {name: values[1:5] for name, values in columns.items()}
    np.testing.assert_array_equal(loaded.predict(complete).predictions, model.predict(X[1:5]))
    assert runs == [1]


def test_a_lazy_load_answers_through_onnx_and_unpickles_only_when_the_estimator_is_wanted(demo_root, tmp_path):
    folder = tmp_path / "breast-cancer" / "1"
    shutil.copytree(demo_root / "breast-cancer" / "1", folder)
    folder.chmod(0o755)
    marker = tmp_path / "unpickled"
    replace_model_file(folder, Payload(marker))  # vouched for by the manifest: what a batch run may hold
    X = demo.breast_cancer()["X"].iloc[::7]
    expected = runtime.load(demo_root / "breast-cancer" / "1", name="breast-cancer", version=1).predict(
        columns_of(X), probabilities=True)

    model = runtime.load(folder, name="breast-cancer", version=1, lazy=True)
    served = model.predict(columns_of(X), probabilities=True)
    assert not marker.exists() and model.backend == "onnx"
    np.testing.assert_array_equal(served.predictions, expected.predictions)
    assert served.predictions.dtype == expected.predictions.dtype == np.int64
    np.testing.assert_array_equal(served.probabilities, expected.probabilities)
    with pytest.raises(ArtifactError, match="not an estimator with predict"):
        model.estimator  # noqa: B018  # the first use unpickles, with load's own checks
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ArtifactError, match="not an estimator with predict"):  # the server's load: at once
        runtime.load(folder, name="breast-cancer", version=1)
    assert marker.exists()


def test_a_lazy_load_unpickles_at_once_when_scikit_learn_answers_and_on_first_use_otherwise(demo_root):
    for name, backend in (("breast-cancer", "joblib"), ("diabetes", "joblib"), ("diabetes", "auto")):
        model = runtime.load(demo_root / name / "1", name=name, version=1, backend=backend, lazy=True)
        assert model.backend == ("onnx" if backend == "auto" else "joblib")
        assert callable(model.estimator.predict)
    lazy = runtime.load(demo_root / "diabetes" / "1", name="diabetes", version=1, lazy=True)
    X = demo.diabetes()["X"].iloc[::9]
    np.testing.assert_array_equal(lazy.predict(columns_of(X)).predictions,
                                  runtime.load(demo_root / "diabetes" / "1", name="diabetes", version=1)
                                  .predict(columns_of(X)).predictions)

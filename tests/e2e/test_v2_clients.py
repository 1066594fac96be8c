"""The standard Open Inference Protocol V2 client against real Gunicorn: tritonclient.http with its defaults.

tritonclient sends tensors as binary data by default (and no Content-Type), asks for binary
outputs when none are named, and reads errors from ``{"error": ...}``. The KServe Python client
(``kserve.InferenceRESTClient``) is not installed: every kserve release that supports numpy 2
requires pandas < 3 and python-dateutil < 3, which requirements.txt pins past.
"""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

pytestmark = pytest.mark.e2e
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402  (after the skip above)

CANCER = load_breast_cancer().data
DIABETES = load_diabetes(as_frame=True, scaled=False).data.astype({"age": "int64", "sex": "int64"})


@pytest.fixture(scope="module")
def triton(demo_server):
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{demo_server.port}", network_timeout=30)
    yield client
    client.close()


def matrix_input(rows: np.ndarray, datatype: str = "FP64", binary: bool = True):
    tensor = httpclient.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype({"FP64": np.float64, "FP32": np.float32}[datatype]), binary_data=binary)
    return tensor


def v1_answer(server, name: str, rows: list[list[float]], probabilities: bool) -> dict:
    body = {"instances": rows, "parameters": {"probabilities": probabilities}}
    response = server.post(f"/v1/models/{name}:predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("breast-cancer") and triton.is_model_ready("breast-cancer", "1")
    assert not triton.is_model_ready("nope")
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    metadata = triton.get_model_metadata("breast-cancer", "1")
    assert metadata["versions"] == ["1"] and len(metadata["inputs"]) == 30
    assert metadata["inputs"][0] == {"name": "mean radius", "datatype": "FP64", "shape": [-1],
                                     "parameters": {"type": "float", "required": True, "nullable": False, "min": 0.0}}


def test_infer_with_the_clients_defaults_answers_as_v1_does(triton, demo_server, demo_root):
    rows = CANCER[:200]
    result = triton.infer("breast-cancer", [matrix_input(rows)])  # binary in, binary out
    predictions = result.as_numpy("predict")
    assert predictions.dtype == np.int64
    assert predictions.tolist() == v1_answer(demo_server, "breast-cancer", rows.tolist(), False)["predictions"]
    model = joblib.load(demo_root / "breast-cancer" / "1" / "model.joblib")
    frame = load_breast_cancer(as_frame=True).data.iloc[:200]
    assert predictions.tolist() == model.predict(frame).tolist()
    ids = result.as_numpy("ids")
    assert len(set(ids.tolist())) == 200 and ids[0].decode().endswith("-0")
    response = result.get_response()
    assert response["model_name"] == "breast-cancer" and response["model_version"] == "1"


def test_requested_outputs_binary_and_json_with_an_id_and_parameters(triton, demo_server):
    rows = CANCER[:50]
    outputs = [httpclient.InferRequestedOutput("predict_proba", binary_data=True),
               httpclient.InferRequestedOutput("predict", binary_data=False)]
    result = triton.infer("breast-cancer", [matrix_input(rows)], model_version="1", outputs=outputs,
                          request_id="req-42", parameters={"trace": "t-1"})
    v1 = v1_answer(demo_server, "breast-cancer", rows.tolist(), True)
    assert result.as_numpy("predict").tolist() == v1["predictions"]
    assert np.array_equal(result.as_numpy("predict_proba"), np.asarray(v1["probabilities"]))
    assert result.get_response()["id"] == "req-42"
    assert result.get_response()["parameters"] == {"trace": "t-1"}


def test_json_inputs_work_when_the_client_names_the_type(triton):
    result = triton.infer("breast-cancer", [matrix_input(CANCER[:3], binary=False)],
                          outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)],
                          headers={"Content-Type": "application/json"})
    assert result.as_numpy("predict").shape == (3,)


def test_a_large_fp32_batch_and_one_input_per_feature(triton):
    result = triton.infer("breast-cancer", [matrix_input(np.tile(CANCER, (9, 1))[:5000], "FP32")])
    assert result.as_numpy("predict").shape == (5000,)
    frame = DIABETES.iloc[:20]
    inputs = []
    for column in frame.columns:
        datatype = "INT64" if frame[column].dtype == np.int64 else "FP64"
        tensor = httpclient.InferInput(column, [len(frame)], datatype)
        tensor.set_data_from_numpy(frame[column].to_numpy())
        inputs.append(tensor)
    predicted = triton.infer("diabetes", inputs).as_numpy("predict")
    assert predicted.dtype == np.float64 and predicted.shape == (20,)


def test_errors_reach_the_client_with_the_servers_message(triton):
    with pytest.raises(InferenceServerException) as exc:
        triton.infer("breast-cancer", [matrix_input(CANCER[:2, :29])])
    assert exc.value.status() == "400" and "Must have exactly 30 values" in exc.value.message()
    negative = -np.abs(CANCER[:1])
    with pytest.raises(InferenceServerException) as exc:
        triton.infer("breast-cancer", [matrix_input(negative)])
    assert "Must be greater than or equal to 0.0" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        triton.infer("nope", [matrix_input(CANCER[:1])])
    assert exc.value.status() == "404"

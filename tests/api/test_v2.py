"""The Open Inference Protocol V2 surface through the HTTP shell, in-process: health, metadata, infer, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from service.models import registry
from service.security.keys import create_key
from tests.api.test_predict import rows_of
from tests.api.test_protocol_parity import reference
from tests.builders import copy_version, wait_until

CANCER = load_breast_cancer().data[:5]


def matrix_body(rows: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}],
            **extra}


def binary_request(rows: np.ndarray, **header) -> tuple[bytes, dict[str, str]]:
    """A body as tritonclient.http sends it: JSON header, raw tensor, and no Content-Type."""
    raw = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    head = json.dumps({"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                                   "parameters": {"binary_data_size": len(raw)}}], **header}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


def binary_outputs(response) -> dict[str, np.ndarray]:
    length = int(response.headers["Inference-Header-Content-Length"])
    header, offset, out = json.loads(response.data[:length]), length, {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        dtype = {"INT64": "<i8", "FP64": "<f8"}[output["datatype"]]
        out[output["name"]] = np.frombuffer(response.data[offset:offset + size], dtype=dtype).reshape(output["shape"])
        offset += size
    return out


# -- server and model endpoints ------------------------------------------------------------------


def test_server_metadata_and_health(client):
    assert client.get("/v2").get_json() == {"name": "sklearn-prediction-server", "version": "1",
                                            "extensions": ["binary_tensor_data"]}
    assert client.get("/v2/health/live").get_json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.get_json() == {"ready": True}


def test_not_ready_is_a_4xx_as_the_spec_says(make_app, tmp_path):
    (tmp_path / "empty").mkdir()
    client = make_app(artifacts_dir=tmp_path / "empty").test_client()
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 400


def test_model_metadata_lists_the_schema_as_tensors(client):
    body = client.get("/v2/models/diabetes").get_json()
    assert (body["name"], body["versions"], body["platform"]) == ("diabetes", ["1"], "sklearn")
    inputs = {tensor["name"]: tensor for tensor in body["inputs"]}
    assert list(inputs)[:3] == ["age", "sex", "bmi"] and len(inputs) == 10
    assert inputs["age"] == {"name": "age", "datatype": "INT64", "shape": [-1],
                             "parameters": {"type": "int", "required": True, "nullable": False, "min": 0, "max": 120}}
    assert inputs["sex"]["datatype"] == "INT64" and inputs["bmi"]["datatype"] == "FP64"
    assert body["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]},
                               {"name": "ids", "datatype": "BYTES", "shape": [-1]}]
    cancer = client.get("/v2/models/breast-cancer/versions/1").get_json()
    assert [o["name"] for o in cancer["outputs"]] == ["predict", "predict_proba", "ids"]
    assert cancer["outputs"][0]["datatype"] == "INT64" and cancer["outputs"][1]["shape"] == [-1, 2]


def test_model_readiness_by_version(client):
    assert client.get("/v2/models/breast-cancer/ready").get_json() == {"name": "breast-cancer", "ready": True}
    assert client.get("/v2/models/breast-cancer/versions/1/ready").status_code == 200
    assert client.get("/v2/models/breast-cancer/versions/7/ready").status_code == 404


@pytest.mark.parametrize("path", ["/v2/models/nope", "/v2/models/nope/ready", "/v2/models/breast-cancer/versions/9"])
def test_unknown_models_and_versions_are_404_in_the_spec_shape(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert set(response.get_json()) == {"error"} and isinstance(response.get_json()["error"], str)


# -- inference ------------------------------------------------------------------------------------


def test_json_infer_matches_the_model_and_echoes_id_and_parameters(app, client):
    frame = rows_of("breast-cancer", 7)
    expected, proba = reference(app, "breast-cancer", frame)
    body = matrix_body(frame.to_numpy(), id="my-request", parameters={"trace": "abc"},
                       outputs=[{"name": "predict"}, {"name": "predict_proba"}])
    response = client.post("/v2/models/breast-cancer/infer", json=body)
    assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"
    answer = response.get_json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("breast-cancer", "1", "my-request")
    assert answer["parameters"] == {"trace": "abc"}
    predict, probabilities = answer["outputs"]
    assert predict == {"name": "predict", "datatype": "INT64", "shape": [7], "data": expected.tolist()}
    assert probabilities["shape"] == [7, 2] and probabilities["data"] == proba.ravel().tolist()


def test_binary_infer_without_a_content_type_as_tritonclient_sends_it(app, client):
    frame = rows_of("breast-cancer", 300)
    expected, proba = reference(app, "breast-cancer", frame)
    data, headers = binary_request(frame.to_numpy(), outputs=[
        {"name": "predict", "parameters": {"binary_data": True}},
        {"name": "predict_proba", "parameters": {"binary_data": True}}])
    response = client.post("/v2/models/breast-cancer/versions/1/infer", data=data, headers=headers)
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"] == "application/octet-stream"
    outputs = binary_outputs(response)
    np.testing.assert_array_equal(outputs["predict"], expected)
    np.testing.assert_array_equal(outputs["predict_proba"], proba)


def test_an_untyped_json_body_from_a_client_library_is_read_as_json(client):
    """The KServe client and tritonclient's JSON mode send no Content-Type; neither is a browser."""
    response = client.post("/v2/models/breast-cancer/infer", data=json.dumps(matrix_body(CANCER)))
    assert response.status_code == 200, response.data


@pytest.mark.parametrize("browser_header", [{"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"}])
def test_an_untyped_body_from_a_browser_is_refused(client, browser_header):
    response = client.post("/v2/models/breast-cancer/infer", data=json.dumps(matrix_body(CANCER)),
                           headers=browser_header)
    assert response.status_code == 415 and "Content-Type" in response.get_json()["error"]


def test_a_cross_site_binary_request_is_still_refused(client):
    data, headers = binary_request(CANCER)
    response = client.post("/v2/models/breast-cancer/infer", data=data,
                           headers={**headers, "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403 and set(response.get_json()) == {"error"}


def test_per_feature_inputs_mix_types_and_report_values_by_row(app, client):
    frame = rows_of("diabetes", 4)
    expected, _ = reference(app, "diabetes", frame)
    inputs = [{"name": name, "shape": [4], "datatype": "INT64" if name in ("age", "sex") else "FP64",
               "data": frame[name].tolist()} for name in frame.columns]
    answer = client.post("/v2/models/diabetes/infer", json={"inputs": inputs}).get_json()
    assert answer["outputs"][0]["data"] == expected.tolist()
    inputs[1]["data"] = [1, 2, 3, 1]  # sex is a category of 1 and 2
    inputs[2]["data"][0] = None
    refused = client.post("/v2/models/diabetes/infer", json={"inputs": inputs})
    assert refused.status_code == 400
    assert refused.get_json() == {"error": "2 invalid values in 2 rows; first: row 0, field 'bmi': "
                                           "Field may not be null."}


@pytest.mark.parametrize(("body", "status"), [
    ({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 29}]}, 400),
    ({"inputs": [{"name": "x", "shape": [1, 29], "datatype": "FP64", "data": [1.0] * 29}]}, 400),
    ({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": [-1.0] * 30}]}, 400),
    ({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "BYTES", "data": ["a"] * 30}]}, 400),
    ({"inputs": [{"name": "mean radius", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, 400),
    ({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 30}],
      "outputs": [{"name": "nope"}]}, 400),
    ({"instances": [[1.0] * 30]}, 400),
])
def test_bad_requests_are_400_with_a_message(client, body, status):
    response = client.post("/v2/models/breast-cancer/infer", json=body)
    assert response.status_code == status
    assert set(response.get_json()) == {"error"} and response.get_json()["error"]


def test_errors_elsewhere_keep_the_service_shape(client):
    response = client.post("/v1/models/breast-cancer:predict", json={"instances": [[1.0] * 29]})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "validation_failed"
    assert client.get("/v2/nowhere").get_json()["error"]["code"] == "not_found"  # routing never reaches /v2's handler


def test_unknown_model_is_404_and_probabilities_of_a_regressor_400(client):
    body = matrix_body(CANCER)
    assert client.post("/v2/models/nope/infer", json=body).status_code == 404
    regressor = matrix_body(np.ones((1, 10)), outputs=[{"name": "predict_proba"}])
    response = client.post("/v2/models/diabetes/infer", json=regressor)
    assert response.status_code == 400 and "probabilities" in response.get_json()["error"]


def test_too_large_is_413_in_the_spec_shape(make_app):
    client = make_app(max_request_bytes=1000).test_client()
    response = client.post("/v2/models/breast-cancer/infer", json=matrix_body(CANCER))
    assert response.status_code == 413 and set(response.get_json()) == {"error"}


# -- the one prediction path: labels, canary, routing, feedback, keys ----------------------------------


def test_labels_and_the_canary_apply_as_in_v1(make_app, artifact_root):
    copy_version(artifact_root, "breast-cancer", 1, 2)
    registry.set_label(artifact_root, "breast-cancer", "staging", 2, actor="test")
    registry.set_rollout(artifact_root, "breast-cancer", canary={"version": 2, "weight": 100}, actor="test")
    client = make_app().test_client()
    body = matrix_body(CANCER[:1])
    assert client.post("/v2/models/breast-cancer/infer", json=body).headers["X-Model-Version"] == "2"
    pinned = client.post("/v2/models/breast-cancer/versions/1/infer", json=body)
    assert pinned.headers["X-Model-Version"] == "1" and pinned.get_json()["model_version"] == "1"
    assert client.post("/v2/models/breast-cancer/labels/staging/infer", json=body).headers["X-Model-Version"] == "2"
    assert client.post("/v2/models/breast-cancer/labels/gone/infer", json=body).status_code == 404


def test_ids_take_feedback(client):
    answer = client.post("/v2/models/breast-cancer/infer", json=matrix_body(CANCER)).get_json()
    predict, ids = answer["outputs"]
    feedback = {"feedback": [{"id": i, "label": p} for i, p in zip(ids["data"], predict["data"], strict=True)]}

    def accepted():  # the answer is logged just after the response: feedback waits for it
        return client.post("/v1/models/breast-cancer/feedback", json=feedback).get_json()["accepted"] or None

    assert wait_until(accepted, timeout=10, message="feedback accepted") == len(CANCER)


def test_keys_on_need_the_predict_and_read_scopes(make_app, tmp_path):
    path = tmp_path / "keys.json"
    keys = {scope: create_key(path, f"only-{scope}", [scope]) for scope in ("predict", "read")}
    client = make_app(api_keys_file=path).test_client()
    refused = client.post("/v2/models/breast-cancer/infer", json=matrix_body(CANCER))
    assert refused.status_code == 401 and set(refused.get_json()) == {"error"}
    assert refused.headers.getlist("WWW-Authenticate")
    for scope, status in (("read", 403), ("predict", 200)):
        response = client.post("/v2/models/breast-cancer/infer", json=matrix_body(CANCER),
                               headers={"Authorization": f"Bearer {keys[scope]}"})
        assert response.status_code == status
    assert client.get("/v2/models/breast-cancer").status_code == 401
    assert client.get("/v2/models/breast-cancer", headers={"Authorization": f"Bearer {keys['read']}"}).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200  # probes stay open

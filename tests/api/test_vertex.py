"""Vertex AI's custom-container contract through the app: the routes the platform names, v1's body.

Requirements: https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements
(health: GET on AIP_HEALTH_ROUTE, 200 once ready; predict: POST on AIP_PREDICT_ROUTE with
``{"instances": [...], "parameters": {...}}``, answered with ``{"predictions": [...]}``).
"""

from __future__ import annotations

import pytest
from sklearn.datasets import load_breast_cancer

from service.api import openapi
from service.config import Config
from service.errors import ConfigError

HEALTH = "/v1/endpoints/1234567890/deployedModels/9876543210"
PREDICT = HEALTH + ":predict"
ROWS = load_breast_cancer().data[:3].tolist()


@pytest.fixture
def vertex_app(make_app):
    return make_app(aip_health_route=HEALTH, aip_predict_route=PREDICT, default_model="breast-cancer")


def test_the_health_route_vertex_names_answers_once_the_model_is_ready(vertex_app, make_app):
    assert vertex_app.test_client().get(HEALTH).status_code == 200
    missing = make_app(aip_health_route=HEALTH, aip_predict_route=PREDICT, default_model="nope")
    assert missing.test_client().get(HEALTH).status_code == 503


def test_vertex_requests_get_the_predictions_v1_gives(vertex_app):
    client = vertex_app.test_client()
    body = {"instances": ROWS, "parameters": {"probabilities": True}}
    answer = client.post(PREDICT, json=body)
    assert answer.status_code == 200, answer.text
    direct = client.post("/v1/models/breast-cancer:predict", json=body).get_json()
    got = answer.get_json()
    assert got["predictions"] == direct["predictions"] and len(got["predictions"]) == 3
    assert got["probabilities"] == direct["probabilities"] and got["model"] == "breast-cancer"


def test_a_bad_vertex_request_gets_the_one_error_shape_naming_the_field(vertex_app):
    client = vertex_app.test_client()
    wrong = client.post(PREDICT, json={"instances": [ROWS[0][:-1] + ["x"]]})
    assert wrong.status_code == 422
    assert wrong.get_json()["error"]["code"] == "validation_failed"
    assert wrong.get_json()["error"]["details"]["errors"] == [
        {"row": 0, "field": "worst fractal dimension", "messages": ["Not a valid number."]}]
    assert client.post(PREDICT, json={"rows": ROWS}).status_code == 422


def test_the_vertex_routes_exist_only_when_set_and_are_documented(vertex_app, app):
    assert app.test_client().post(PREDICT, json={"instances": ROWS}).status_code == 404
    with vertex_app.test_request_context():
        paths = openapi.build_spec(vertex_app)["paths"]
    assert "post" in paths[PREDICT] and "get" in paths[HEALTH]


def test_platform_variables_stand_in_for_ours_when_ours_are_unset(tmp_path):
    assert Config.from_env({"AIP_HTTP_PORT": "8080"}).port == 8080
    assert Config.from_env({"SAGEMAKER_BIND_TO_PORT": "8081"}).port == 8081
    assert Config.from_env({"AIP_HTTP_PORT": "8080", "PORT": "9000"}).port == 9000
    mounted = tmp_path / "azureml-models" / "churn" / "1"
    (mounted / "artifacts").mkdir(parents=True)  # the registered folder, inside the mount
    assert Config.from_env({"AZUREML_MODEL_DIR": str(mounted)}).artifacts_dir == mounted / "artifacts"
    flat = tmp_path / "flat"
    flat.mkdir()
    assert Config.from_env({"AZUREML_MODEL_DIR": str(flat)}).artifacts_dir == flat
    assert Config.from_env({"AZUREML_MODEL_DIR": str(flat), "ARTIFACTS_DIR": "mine"}).artifacts_dir.name == "mine"


@pytest.mark.parametrize("route", ["v1/predict", "/v1/<name>:predict", "/p?x=1"])
def test_a_route_that_is_not_a_plain_path_is_refused_by_name(route):
    with pytest.raises(ConfigError, match="AIP_PREDICT_ROUTE"):
        Config(aip_predict_route=route)

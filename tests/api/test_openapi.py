"""``/openapi.json`` and ``/docs`` in-process: a valid OpenAPI 3.1 document that covers every route,
documents the statuses the routes really answer, and describes each model from its manifest."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from service.api import openapi, openapi_routes
from service.security.keys import create_key

CANCER_ROW = [1.0] * 30


@pytest.fixture
def spec(app) -> dict:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def schema_validator(spec: dict, ref: str) -> Draft202012Validator:
    """A JSON Schema validator for ``#/components/schemas/<ref>``; the document's own refs resolve in it."""
    return Draft202012Validator({"$ref": f"#/components/schemas/{ref}", "components": spec["components"]})


def operation(spec: dict, path: str, method: str) -> dict:
    return spec["paths"][path][method]


def test_the_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_every_route_of_the_app_is_documented(app, spec):
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item
                  if method != "parameters"}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static") or rule.endpoint == "openapi.asset":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (openapi.openapi_path(rule), method) in documented, (rule.rule, method)


def test_scopes_and_error_statuses_come_from_the_code(spec):
    predict = operation(spec, "/v1/models/{name}:predict", "post")
    assert set(predict["responses"]) == {"200", "400", "401", "403", "404", "413", "415", "422", "429", "500", "503"}
    assert "predict scope" in predict["description"] and predict["security"]
    assert "model_not_found" in predict["responses"]["404"]["description"]
    healthz = operation(spec, "/healthz", "get")
    assert "security" not in healthz and set(healthz["responses"]) == {"200", "403", "500"}
    assert set(operation(spec, "/readyz", "get")["responses"]) == {"200", "403", "500", "503"}
    label = operation(spec, "/v1/models/{name}/labels/{label}", "put")
    assert "admin scope" in label["description"] and "409" in label["responses"]
    assert label["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LabelChange"}
    invocations = operation(spec, "/invocations", "post")
    assert set(invocations["requestBody"]["content"]) == {"application/json", "text/csv"}
    assert invocations["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MlflowError"}


#: Errors raised deep in the limits, codecs and monitoring: (path, method) -> {status: codes the document must list}.
DEEP_ERRORS = {
    ("/v1/models/{name}:predict", "post"): {"422": ["too_many_elements", "input_out_of_domain"], "429": ["rate_limited"],
                                           "500": ["model_output_invalid"]},
    ("/v1/models/{name}:explain", "post"): {"422": ["too_many_elements", "input_out_of_domain"],
                                           "429": ["rate_limited"], "503": ["model_unavailable"]},
    ("/v2/models/{name}/infer", "post"): {"400": ["too_many_elements", "input_out_of_domain"], "429": ["rate_limited"]},
    ("/invocations", "post"): {"422": ["too_many_elements", "input_out_of_domain"], "429": ["rate_limited"]},
    ("/v1/models/{name}/feedback", "post"): {"422": ["too_many_elements"], "429": ["rate_limited"]},
    ("/v1/models/{name}/monitoring", "get"): {"429": ["rate_limited"], "503": ["monitoring_busy"]},
    ("/monitoring", "get"): {"429": ["rate_limited"], "503": ["monitoring_busy"]},
    ("/monitoring/{name}", "get"): {"429": ["rate_limited"], "503": ["monitoring_busy"]},
    ("/v1/models/{name}/predictions/{prediction_id}/explanation", "get"): {
        "404": ["prediction_not_found"], "409": ["inputs_not_stored"], "429": ["rate_limited"]},
}


@pytest.mark.parametrize("path, method", DEEP_ERRORS)
def test_errors_raised_below_the_views_are_documented(spec, path, method):
    responses = operation(spec, path, method)["responses"]
    for status, codes in DEEP_ERRORS[path, method].items():
        assert status in responses, status
        assert set(codes) <= set(responses[status]["description"].split(", ")), (status, responses[status])


def test_the_request_bodies_are_the_validating_schemas(spec):
    schemas = spec["components"]["schemas"]
    assert set(schemas["PredictRequest"]["properties"]) == {"instances", "inputs", "parameters"}
    assert schemas["PredictRequest"]["additionalProperties"] is False
    assert set(schemas["InvocationRequest"]["properties"]) == {"dataframe_split", "dataframe_records", "instances",
                                                                "inputs", "params"}
    assert schemas["LabelChange"]["required"] == ["version"]
    assert schemas["Feedback"]["properties"]["feedback"]["maxItems"] == 10_000


def test_each_model_has_a_request_schema_from_its_manifest(spec):
    record = spec["components"]["schemas"]["Model_diabetesRecord"]
    assert record["properties"]["age"] == {"description": "int feature", "type": "integer", "minimum": 0, "maximum": 120}
    assert record["properties"]["sex"]["enum"] == [1, 2]
    assert record["additionalProperties"] is False and len(record["required"]) == 10
    cancer = operation(spec, "/v1/models/breast-cancer:predict", "post")
    assert cancer["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Model_breast_cancerRequest"}


def test_real_answers_match_their_documented_schemas(app, spec):
    client = app.test_client()
    answer = client.post("/v1/models/breast-cancer:predict",
                         json={"instances": [CANCER_ROW], "parameters": {"probabilities": True}})
    schema_validator(spec, "PredictResponse").validate(answer.get_json())
    request = {"instances": [dict.fromkeys(spec["components"]["schemas"]["Model_breast_cancerRecord"]["required"], 1.0)]}
    schema_validator(spec, "Model_breast_cancerRequest").validate(request)
    assert client.post("/v1/models/breast-cancer:predict", json=request).status_code == 200
    for bad in ({"instances": []}, {"instances": [{"nope": 1}]}):
        assert list(schema_validator(spec, "Model_breast_cancerRequest").iter_errors(bad))
    for path, body in (("/v1/models/nope:predict", {"instances": [[1]]}), ("/v1/models/breast-cancer:predict", {})):
        error = client.post(path, json=body)
        assert str(error.status_code) in operation(spec, "/v1/models/{name}:predict", "post")["responses"]
        schema_validator(spec, "Error").validate(error.get_json())
    mlflow_error = client.post("/invocations", json={})
    schema_validator(spec, "MlflowError").validate(mlflow_error.get_json())


def test_keys_on_the_document_and_page_need_the_read_scope(make_app, tmp_path):
    path = tmp_path / "keys.json"
    read, predict = create_key(path, "reader", ["read"]), create_key(path, "caller", ["predict"])
    client = make_app(api_keys_file=path).test_client()
    for url in ("/openapi.json", "/docs"):
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"X-API-Key": predict}).status_code == 403
        assert client.get(url, headers={"X-API-Key": read}).status_code == 200
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/static/init.js"):  # no data in them: no key
        with client.get(asset) as response:
            assert response.status_code == 200
    assert client.get("/docs/assets/index.html").status_code == 404  # only the files the page uses


def test_the_docs_page_loads_nothing_from_elsewhere(client):
    page = client.get("/docs")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "http" not in html
    assert 'data-spec-url="/openapi.json"' in html


def test_a_prediction_links_to_its_model_and_version_for_stateful_clients(spec):
    links = operation(spec, "/v1/models/{name}:predict", "post")["responses"]["200"]["links"]
    assert links["model"] == {"operationId": operation(spec, "/v1/models/{name}", "get")["operationId"],
                              "parameters": {"name": "$response.body#/model"}}
    assert links["version"]["parameters"]["version"] == "$response.body#/version"
    assert [t["name"] for t in spec["tags"]][:3] == ["predict", "mlflow", "v2"]


@pytest.mark.parametrize(("feature", "expected"), [
    ({"name": "x", "type": "float", "min": 0.5, "max": None}, {"type": "number", "minimum": 0.5}),
    ({"name": "x", "type": "int", "nullable": True}, {"type": ["integer", "null"]}),
    ({"name": "x", "type": "bool"}, {"type": "boolean"}),
    ({"name": "x", "type": "string", "categories": ["a", "b"], "nullable": True}, {"enum": ["a", "b", None]}),
    ({"name": "x", "type": "category", "categories": None}, {"type": ["string", "integer"]}),
])
def test_a_feature_becomes_json_schema(feature, expected):
    assert {k: v for k, v in openapi_routes.feature_schema(feature).items() if k != "description"} == expected


def test_both_explanations_are_documented_in_one_shape_and_answer_in_it(app, spec):
    client = app.test_client()
    now = client.post("/v1/models/breast-cancer:explain", json={"instances": [[14.0] * 30]}).get_json()
    app.extensions["observer"].flush()
    later = client.get(f"/v1/models/breast-cancer/predictions/{now['ids'][0]}/explanation").get_json()
    explain = operation(spec, "/v1/models/{name}:explain", "post")["responses"]["200"]["content"]["application/json"]
    logged = operation(spec, "/v1/models/{name}/predictions/{prediction_id}/explanation", "get")["responses"]["200"]
    assert explain["schema"] == {"$ref": "#/components/schemas/PredictResponse"}
    assert logged["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LoggedExplanation"}
    schemas = spec["components"]["schemas"]
    assert schemas["PredictResponse"]["properties"]["explanations"] == schemas["LoggedExplanation"]["properties"][
        "explanations"]
    for ref, body in (("PredictResponse", now), ("LoggedExplanation", later)):
        assert list(schema_validator(spec, ref).iter_errors(body)) == [], ref
    assert set(schemas["RowExplanation"]["required"]) == {"base", "contributions"}

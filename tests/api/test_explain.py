"""Explanations over HTTP, in-process: :explain, predict's explain parameter, and a logged decision explained again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service.models import registry
from service.models.packaging import package_model
from tests.api.test_predict import in_process, payloads, rows_of


def linear_output(root, name, frame):
    model = joblib_model(root, name)
    return model.decision_function(frame) if name == "breast-cancer" else model.predict(frame)


def joblib_model(root, name):
    import joblib

    return joblib.load(root / name / "1" / "model.joblib")


@pytest.mark.parametrize("name", ["breast-cancer", "diabetes"])
@pytest.mark.parametrize("layout", ["records", "rows", "columns"])
def test_explain_adds_up_to_the_model_output(client, artifact_root, name, layout):
    frame = rows_of(name, 4)
    reply = client.post(f"/v1/models/{name}:explain", json=payloads(frame)[layout])
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    predicted, _ = in_process(artifact_root, name, frame)
    # served (ONNX Runtime by default) = in-process joblib within the documented 1e-9, not to the last bit
    np.testing.assert_allclose(body["predictions"], predicted.tolist(), rtol=0, atol=1e-9)
    assert len(body["ids"]) == 4
    assert body["explanation"]["method"] == "linear" and body["explanation"]["exact"] is True
    assert body["explanation"]["output"] == ("log_odds" if name == "breast-cancer" else "value")
    totals = [item["base"] + sum(item["contributions"].values()) for item in body["explanations"]]
    np.testing.assert_allclose(totals, linear_output(artifact_root, name, frame), rtol=0, atol=1e-9)
    if name == "diabetes":  # the explained output is the answer itself
        np.testing.assert_allclose(totals, body["predictions"], rtol=0, atol=1e-9)
    assert list(body["explanations"][0]["contributions"]) == list(frame.columns)


def test_predict_explains_only_when_asked(client):
    frame = rows_of("breast-cancer", 2)
    plain = client.post("/v1/models/breast-cancer:predict", json=payloads(frame)["records"]).get_json()
    assert "explanations" not in plain
    asked = client.post("/v1/models/breast-cancer/versions/1:predict",
                        json={**payloads(frame)["records"], "parameters": {"explain": True, "probabilities": True}})
    body = asked.get_json()
    assert asked.status_code == 200 and len(body["explanations"]) == 2 and body["explanation"]["class"] == 1
    assert "probabilities" in body
    labelled = client.post("/v1/models/breast-cancer/labels/production:explain", json=payloads(frame)["rows"])
    assert labelled.status_code == 200 and labelled.headers["X-Model-Version"] == "1"


def test_explain_parameter_must_be_a_boolean(client):
    frame = rows_of("diabetes", 1)
    reply = client.post("/v1/models/diabetes:predict", json={**payloads(frame)["records"], "parameters": {"explain": "yes"}})
    assert reply.status_code == 422
    assert reply.get_json()["error"]["details"]["errors"][0]["field"] == "parameters.explain"


def test_explain_errors_keep_the_one_shape(client):
    assert client.post("/v1/models/nope:explain", json={"instances": [[1]]}).status_code == 404
    bad = client.post("/v1/models/diabetes:explain", json={"instances": [{"age": "old"}]})
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "validation_failed"


def mixed_frame(n=200):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"age": rng.normal(40, 10, n), "postcode": rng.choice(["a1", "b2", "c3"], n),
                          "income": rng.lognormal(8, 0.4, n)})
    return frame, pd.Series((frame["age"] + (frame["postcode"] == "a1") * 10 > 45).astype(int))


def package_with_pii(root, name, final):
    frame, y = mixed_frame()
    prepare = ColumnTransformer([("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(), ["postcode"])])
    model = make_pipeline(prepare, final).fit(frame, y)
    manifest = package_model(model, name, root, frame, y, overrides={"postcode": {"pii": True}})
    registry.record_packaged(root, manifest, actor="test")
    return frame


def predicted_ids(app, client, name, frame):
    body = client.post(f"/v1/models/{name}:predict", json=payloads(frame)["records"]).get_json()
    app.extensions["observer"].flush()
    return body["ids"]


def test_a_logged_prediction_is_explained_again(app, client):
    frame = rows_of("breast-cancer", 3)
    ids = predicted_ids(app, client, "breast-cancer", frame)
    now = client.post("/v1/models/breast-cancer:explain", json=payloads(frame)["records"]).get_json()
    later = client.get(f"/v1/models/breast-cancer/predictions/{ids[1]}/explanation")
    assert later.status_code == 200, later.get_json()
    body = later.get_json()
    assert body["id"] == ids[1] and body["version"] == 1 and body["prediction"] == now["predictions"][1]
    assert body["explanation"]["complete"] is True and body["explanation"]["withheld"] == {}
    # :explain's shape: what the numbers mean in "explanation", the row in "explanations"
    assert body["explanation"] == now["explanation"] | {"complete": True, "withheld": {}}
    assert "base" not in body and "contributions" not in body and len(body["explanations"]) == 1
    (row,) = body["explanations"]
    assert set(row) == set(now["explanations"][1]) == {"base", "contributions"}
    assert row["base"] == pytest.approx(now["explanations"][1]["base"], abs=1e-12)
    assert row["contributions"] == pytest.approx(now["explanations"][1]["contributions"], abs=1e-9)


def test_unknown_prediction_is_404(client):
    reply = client.get("/v1/models/breast-cancer/predictions/nope-0/explanation")
    assert reply.status_code == 404 and reply.get_json()["error"]["code"] == "prediction_not_found"


def test_pii_never_stored_is_named_and_linear_models_explain_the_rest(make_app, artifact_root):
    frame = package_with_pii(artifact_root, "loans", LogisticRegression())
    app = make_app()
    client = app.test_client()
    ids = predicted_ids(app, client, "loans", frame.iloc[:2])
    body = client.get(f"/v1/models/loans/predictions/{ids[0]}/explanation").get_json()
    assert body["explanation"]["complete"] is False
    assert body["explanation"]["withheld"] == {"postcode": "pii: never stored (no PII_HASH_KEY when it was logged)"}
    (row,) = body["explanations"]
    assert row["contributions"]["postcode"] is None
    fresh = client.post("/v1/models/loans:explain", json=payloads(frame.iloc[:1])["records"]).get_json()
    for feature in ("age", "income"):
        assert row["contributions"][feature] == pytest.approx(fresh["explanations"][0]["contributions"][feature])


def test_pii_hashed_blocks_a_tree_explanation_with_the_reason(make_app, artifact_root):
    frame = package_with_pii(artifact_root, "loans", RandomForestClassifier(10, random_state=0))
    app = make_app(pii_hash_key="k" * 32)
    client = app.test_client()
    ids = predicted_ids(app, client, "loans", frame.iloc[:1])
    reply = client.get(f"/v1/models/loans/predictions/{ids[0]}/explanation")
    assert reply.status_code == 409
    error = reply.get_json()["error"]
    assert error["code"] == "inputs_not_stored" and "postcode" in error["message"]
    assert error["details"]["withheld"]["postcode"].startswith("pii: stored only as a keyed hash")


def test_explanation_of_a_past_decision_needs_read_scope(make_app, tmp_path):
    from service.security import keys

    path = tmp_path / "keys.json"
    key = keys.create_key(path, "predictor", ["predict"])
    client = make_app(api_keys_file=path).test_client()
    reply = client.get("/v1/models/breast-cancer/predictions/x-0/explanation", headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 403


def test_explaining_a_logged_decision_is_recorded_in_the_audit_trail(app, client):
    from service.security import audit
    from tests.builders import wait_until

    ids = predicted_ids(app, client, "breast-cancer", rows_of("breast-cancer", 2))
    assert client.get(f"/v1/models/breast-cancer/predictions/{ids[0]}/explanation").status_code == 200
    store = app.extensions["store"]
    found = wait_until(lambda: audit.find(store, "prediction.explained"), timeout=10, message="the audit record")
    assert found[-1].target == "model:breast-cancer" and found[-1].details["prediction_id"] == ids[0]
    assert audit.verify(store).ok

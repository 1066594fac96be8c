"""PUT /v1/models/<m>/labels/<l> moves to a version that changes meaning only with "force": true."""

from __future__ import annotations

from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression

from service.models import registry
from service.models.packaging import package_model
from service.security.keys import create_key


def test_the_admin_api_needs_force_for_a_breaking_label_move(make_app, artifact_root, tmp_path):
    X, y = load_diabetes(return_X_y=True, as_frame=True, scaled=False)
    y = (y > 140).map({True: "high", False: "low"})
    manifest = package_model(LogisticRegression(max_iter=2000).fit(X, y), "diabetes", artifact_root, X, y,
                             breaking=True)
    registry.record_packaged(artifact_root, manifest, actor="test")
    keys = tmp_path / "keys.json"
    key = create_key(keys, "ops", ["admin", "read"])
    client = make_app(artifacts_dir=artifact_root, api_keys_file=keys).test_client()
    client.environ_base["HTTP_X_API_KEY"] = key
    path = "/v1/models/diabetes/labels/production"
    refused = client.put(path, json={"version": manifest["version"]})
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "change_refused"
    assert "task regression -> classification" in refused.get_json()["error"]["message"]
    bad = client.put(path, json={"version": manifest["version"], "force": "yes"})
    assert bad.status_code == 422
    moved = client.put(path, json={"version": manifest["version"], "force": True, "reason": "binary target"})
    assert moved.status_code == 200, moved.get_json()
    assert moved.get_json()["change"]["forced"] is True
    assert registry.read_state(artifact_root, "diabetes")["labels"]["production"] == manifest["version"]

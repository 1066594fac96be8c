"""An unreadable registry.json over HTTP, in-process: served from the last-good copy, reads 503, changes 409."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.models import registry, registry_anchor
from service.security.keys import create_key
from tests.conftest import app_config, close_app

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
READS = ("/v1/models/diabetes/rollout", "/v1/models/diabetes/history", "/v1/models/diabetes/comparison")
CHANGES = (
    ("PUT", "/v1/models/diabetes/labels/staging", {"version": 1}),
    ("DELETE", "/v1/models/diabetes/labels/production", None),
    ("PUT", "/v1/models/diabetes/rollout", {"shadow": [1]}),
    ("POST", "/v1/models/diabetes:promote", {}),
    ("POST", "/v1/models/diabetes:rollback", {}),
)


@pytest.fixture
def keys(tmp_path):
    path = tmp_path / "keys.json"
    return path, {scope: create_key(path, f"only-{scope}", [scope]) for scope in ("read", "admin")}


@pytest.fixture
def make_app(artifact_root, tmp_path):
    """Apps over one database (the registry's audit trail must agree between them), closed at the end."""
    apps = []

    def make(**settings):
        apps.append(create_app(app_config(artifact_root, tmp_path / "db.sqlite", **settings)))
        return apps[-1]

    yield make
    for app in apps:
        close_app(app)


def registry_file(root, name="diabetes"):
    return root / name / "registry.json"


def corrupt(root, name="diabetes"):
    registry_file(root, name).write_text('{"labels": {"production": 1}, "hist')


def assert_no_server_path(response, root):
    text = response.get_data(as_text=True)
    assert str(root) not in text and str(root.parent) not in text and "Traceback" not in text


def test_a_worker_booted_after_the_file_broke_serves_the_last_good_state(make_app, artifact_root):
    corrupt(artifact_root)
    client = make_app().test_client()
    for _ in range(5):
        predicted = client.post("/v1/models/diabetes:predict", json={"instances": [ROW]})
        assert predicted.status_code == 200, predicted.json
        assert predicted.headers["X-Model-Version"] == "1"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    entry = ready.json["models"]["diabetes"]
    assert entry["status"] == "AVAILABLE" and entry["registry"] == "last-good"
    assert entry["registry_error"].startswith("registry.json is not valid JSON")
    assert "registry_error" not in ready.json["models"]["breast-cancer"]
    assert_no_server_path(ready, artifact_root)


def test_registry_reads_answer_503_with_the_way_to_repair(make_app, artifact_root):
    client = make_app().test_client()
    corrupt(artifact_root)
    for url in READS:
        response = client.get(url)
        assert response.status_code == 503, url
        error = response.json["error"]
        assert error["code"] == "registry_unreadable"
        assert error["details"]["restore_command"] == "python -m service registry restore diabetes"
        assert error["details"]["last_good"] is True and "python -m service registry restore" in error["message"]
        assert_no_server_path(response, artifact_root)
    assert client.get("/v1/models/breast-cancer/history").status_code == 200


@pytest.mark.parametrize("method, path, body", CHANGES, ids=[f"{c[0]} {c[1]}" for c in CHANGES])
def test_admin_changes_are_refused_and_never_overwrite_the_file(make_app, artifact_root, keys, method, path, body):
    client = make_app(api_keys_file=keys[0]).test_client()
    corrupt(artifact_root)
    before = registry_file(artifact_root).read_bytes()
    response = client.open(path, method=method, json=body, headers={"X-API-Key": keys[1]["admin"]},
                           content_type="application/json")
    assert response.status_code == 409, response.json
    error = response.json["error"]
    assert error["code"] == "registry_unreadable"
    assert "Nothing was changed" in error["message"] and "python -m service registry restore diabetes" in error["message"]
    assert_no_server_path(response, artifact_root)
    assert registry_file(artifact_root).read_bytes() == before


def test_with_keys_on_the_probe_says_which_state_not_why(make_app, artifact_root, keys):
    corrupt(artifact_root)
    ready = make_app(api_keys_file=keys[0]).test_client().get("/readyz")
    assert ready.status_code == 200
    assert ready.json["models"]["diabetes"] == {"status": "AVAILABLE", "registry": "last-good",
                                                "registry_code": "registry_unreadable"}


def test_no_state_at_all_is_not_ready_and_says_so_instead_of_404(make_app, artifact_root):
    corrupt(artifact_root)
    (artifact_root / "diabetes" / registry.LAST_GOOD_FILE).unlink()
    client = make_app().test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    entry = ready.json["error"]["details"]["models"]["diabetes"]
    assert entry["status"] == "REGISTRY_UNREADABLE" and entry["registry"] == "none"
    predicted = client.post("/v1/models/diabetes:predict", json={"instances": [ROW]})
    assert predicted.status_code == 503 and predicted.json["error"]["code"] == "registry_unreadable"
    pinned = client.post("/v1/models/diabetes/versions/1:predict", json={"instances": [ROW]})
    assert pinned.status_code == 200
    history = client.get("/v1/models/diabetes/history")
    assert history.status_code == 503 and "repair registry.json by hand" in history.json["error"]["message"]
    assert_no_server_path(history, artifact_root)


def test_a_repaired_file_is_picked_up_and_changes_work_again(make_app, artifact_root, keys):
    app = make_app(api_keys_file=keys[0])
    client = app.test_client()
    corrupt(artifact_root)
    app.extensions["catalog"].refresh()
    assert client.get("/readyz").json["models"]["diabetes"]["registry"] == "last-good"
    with registry_anchor.registry_changes(app.extensions["store"]):  # as `python -m service registry restore` does
        registry.restore(artifact_root, "diabetes", actor="ops")
    app.extensions["catalog"].refresh()
    assert client.get("/readyz").json["models"]["diabetes"] == {"status": "AVAILABLE"}
    history = client.get("/v1/models/diabetes/history", headers={"X-API-Key": keys[1]["read"]})
    assert history.status_code == 200 and history.json["history"][-1]["action"] == "registry.restore"
    changed = client.put("/v1/models/diabetes/labels/staging", json={"version": 1},
                         headers={"X-API-Key": keys[1]["admin"]})
    assert changed.status_code == 200

"""API keys and scopes on every protected route, in-process: the whole matrix of route x key -> status."""

from __future__ import annotations

import base64
import logging
import shutil
from pathlib import Path

import pytest

from service.models import registry
from service.security.keys import create_key
from tests.builders import copy_version
from tests.conftest import app_config, close_app

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
CANCER_ROW = [1.0] * 30
V2_BODY = {"inputs": [{"name": "input-0", "shape": [1, 10], "datatype": "FP64", "data": ROW}]}
KEYS = ("none", "wrong", "predict", "read", "admin")  # admin last: its change is the one that succeeds

# (method, path, JSON body or None, the scopes that open it, the status of a call that is let in)
ROUTES = [
    ("POST", "/v1/models/diabetes:predict", {"instances": [ROW]}, {"predict"}, 200),
    ("POST", "/v1/models/diabetes/versions/1:predict", {"instances": [ROW]}, {"predict"}, 200),
    ("POST", "/v1/models/diabetes/labels/production:predict", {"instances": [ROW]}, {"predict"}, 200),
    ("POST", "/v1/models/diabetes/feedback", {"feedback": [{"id": "nope", "label": 1.0}]}, {"predict"}, 200),
    ("GET", "/v1/models", None, {"read"}, 200),
    ("GET", "/v1/models/diabetes", None, {"read"}, 200),
    ("GET", "/v1/models/diabetes/versions/1", None, {"read"}, 200),
    ("GET", "/v1/models/diabetes/monitoring", None, {"read"}, 200),
    ("GET", "/monitoring", None, {"read"}, 200),
    ("GET", "/monitoring/diabetes", None, {"read"}, 200),
    ("GET", "/v1/models/diabetes/rollout", None, {"read", "admin"}, 200),
    ("GET", "/v1/models/diabetes/history", None, {"read", "admin"}, 200),
    ("GET", "/v1/models/diabetes/comparison", None, {"read", "admin"}, 200),
    ("PUT", "/v1/models/diabetes/labels/staging", {"version": 1}, {"admin"}, 200),
    ("DELETE", "/v1/models/diabetes/labels/archive", None, {"admin"}, 200),
    ("PUT", "/v1/models/diabetes/rollout", {"canary": None}, {"admin"}, 200),
    ("POST", "/v1/models/breast-cancer:promote", {}, {"admin"}, 200),
    ("POST", "/v1/models/diabetes:rollback", {}, {"admin"}, 200),
    ("POST", "/v1/subjects:erase", {"subject": "customer-1"}, {"admin"}, 200),
    ("POST", "/v1/models/diabetes:explain", {"instances": [ROW]}, {"predict"}, 200),
    ("POST", "/v1/models/diabetes/versions/1:explain", {"instances": [ROW]}, {"predict"}, 200),
    ("POST", "/v1/models/diabetes/labels/production:explain", {"instances": [ROW]}, {"predict"}, 200),
    ("GET", "/v1/models/diabetes/predictions/nope-0/explanation", None, {"read"}, 404),  # let in: no such id
    ("GET", "/v1/models/diabetes/versions/1/card", None, {"read"}, 200),
    ("POST", "/invocations", {"instances": [ROW]}, {"predict"}, 200),
    ("POST", "/v2/models/diabetes/infer", V2_BODY, {"predict"}, 200),
    ("POST", "/v2/models/diabetes/versions/1/infer", V2_BODY, {"predict"}, 200),
    ("POST", "/v2/models/diabetes/labels/production/infer", V2_BODY, {"predict"}, 200),
    ("GET", "/v2/models/diabetes", None, {"read"}, 200),
    ("GET", "/v2/models/diabetes/versions/1", None, {"read"}, 200),
    ("GET", "/v2/models/diabetes/ready", None, {"read"}, 200),
    ("GET", "/v2/models/diabetes/versions/1/ready", None, {"read"}, 200),
    ("GET", "/version", None, {"read"}, 200),
    ("GET", "/openapi.json", None, {"read"}, 200),
    ("GET", "/docs", None, {"read"}, 200),
    ("GET", "/metrics", None, {"read"}, 200),  # keys configured: model names and hashes are not for anyone
]
OPEN_ROUTES = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/ping"), ("GET", "/health"),
               ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
               ("GET", "/docs/assets/swagger-ui.css"), ("GET", "/docs/static/init.js")]  # the docs page's own files


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A keys file with one key per scope; ``key["wrong"]`` is a well-formed key that is in no file."""
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    key = {scope: create_key(path, f"only-{scope}", [scope]) for scope in ("predict", "read", "admin")}
    return path, {**key, "wrong": "sk_" + "x" * 43}


def prepare(root) -> None:
    """breast-cancer gets a canary to promote, diabetes a production to roll back and a label to remove."""
    copy_version(root, "breast-cancer", 1, 2)
    registry.set_rollout(root, "breast-cancer", canary={"version": 2, "weight": 10}, actor="test")
    copy_version(root, "diabetes", 1, 2)
    registry.set_label(root, "diabetes", "production", 2, actor="test")
    registry.set_label(root, "diabetes", "archive", 1, actor="test")


@pytest.fixture
def keyed_app(make_app, artifact_root, keys):
    """Keys on, a registry of its own: for a test whose calls change the registry."""
    prepare(artifact_root)
    return make_app(api_keys_file=keys[0], default_model="diabetes")


@pytest.fixture(scope="module")
def shared_app(demo_root, keys, tmp_path_factory):
    """Keys on, one app for the module's calls that change nothing (building an app per call is most of the cost)."""
    from service.app import create_app

    folder = tmp_path_factory.mktemp("shared")
    root = Path(shutil.copytree(demo_root, folder / "artifacts"))
    prepare(root)
    app = create_app(app_config(root, folder / "db.sqlite", api_keys_file=keys[0], default_model="diabetes"))
    yield app
    close_app(app)


def changes_state(method: str, path: str) -> bool:
    return method in ("PUT", "DELETE") or path.endswith((":promote", ":rollback"))


def headers_for(who: str, key: dict[str, str]) -> dict[str, str]:
    return {} if who == "none" else {"X-API-Key": key[who]}


@pytest.mark.parametrize("method, path, body, scopes, success", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_every_protected_route_by_every_key(request, keys, method, path, body, scopes, success):
    app = request.getfixturevalue("keyed_app" if changes_state(method, path) else "shared_app")
    client, key = app.test_client(), keys[1]
    expected = {who: 401 if who in ("none", "wrong") else success if who in scopes else 403 for who in KEYS}
    got = {}
    for who in KEYS:
        response = client.open(path, method=method, json=body, headers=headers_for(who, key),
                               content_type=None if method == "GET" else "application/json")
        got[who] = response.status_code
        if response.status_code in (401, 403):
            answer = response.get_json()
            if path.startswith("/v2/"):  # the Open Inference Protocol's shape: the message alone
                assert set(answer) == {"error"} and isinstance(answer["error"], str)
            else:
                error = answer.get("error", answer)  # MLflow's routes answer in MLflow's shape, our code inside
                assert error["code"] == {401: "unauthorized", 403: "forbidden"}[response.status_code]
            assert all(k not in response.get_data(as_text=True) for k in key.values())
    assert got == expected


@pytest.mark.parametrize("method, path", OPEN_ROUTES)
def test_probes_need_no_key(shared_app, method, path):
    with shared_app.test_client().open(path, method=method) as response:  # closed: file answers hold the file open
        assert response.status_code == 200


def test_the_routes_above_are_every_route_of_the_app(shared_app):
    """A new route must join the matrix (or the open list), so its scope is tested too."""
    adapter = shared_app.url_map.bind("localhost")
    tested = {(method, adapter.match(path, method, return_rule=True)[0].rule)
              for method, path in [(m, p) for m, p, *_ in ROUTES] + OPEN_ROUTES}
    rules = {(method, rule.rule) for rule in shared_app.url_map.iter_rules() if rule.endpoint != "static"
             for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert rules == tested


def test_how_a_refused_key_is_told(shared_app, keys, caplog):
    client, key = shared_app.test_client(), keys[1]
    body = {"instances": [ROW]}
    with caplog.at_level(logging.DEBUG):
        anonymous = client.post("/v1/models/diabetes:predict", json=body)
        assert anonymous.get_json()["error"]["details"]["reason"] == "missing_credentials"
        assert any(c.startswith("Bearer") for c in anonymous.headers.getlist("WWW-Authenticate"))
        wrong = client.post("/v1/models/diabetes:predict", json=body, headers={"Authorization": "Bearer sk_nope"})
        assert wrong.status_code == 401 and wrong.get_json()["error"]["details"]["reason"] == "invalid_key"
        reader = client.post("/v1/models/diabetes:predict", json=body, headers={"Authorization": f"Bearer {key['read']}"})
        assert reader.status_code == 403 and reader.get_json()["error"]["details"]["required_scope"] == "predict"
        bearer = client.post("/v1/models/diabetes:predict", json=body,
                             headers={"Authorization": f"Bearer {key['predict']}"})
        header = client.post("/v1/models/diabetes:predict", json=body, headers={"X-API-Key": key["predict"]})
        assert bearer.status_code == header.status_code == 200
    assert caplog.records and not [r for r in caplog.records if any(k in r.getMessage() + str(r.__dict__)
                                                                    for k in key.values())]


def test_a_browser_opens_the_monitoring_page_with_basic_auth(shared_app, keys):
    client, key = shared_app.test_client(), keys[1]

    def basic(password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"dashboard:{password}".encode()).decode()}

    challenge = client.get("/monitoring")
    assert challenge.status_code == 401
    assert any(c.startswith("Basic") for c in challenge.headers.getlist("WWW-Authenticate"))
    page = client.get("/monitoring", headers=basic(key["read"]))
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert client.get("/monitoring", headers=basic(key["predict"])).status_code == 403


def test_open_on_loopback_says_so(make_app, caplog):
    with caplog.at_level(logging.WARNING):
        client = make_app().test_client()
    assert any("authentication" in r.getMessage().lower() for r in caplog.records if r.levelno == logging.WARNING)
    assert client.post("/v1/models/diabetes:predict", json={"instances": [ROW]}).status_code == 200
    assert client.get("/v1/models").status_code == 200

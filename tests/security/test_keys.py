import base64
import json
import logging
import os
import stat

import pytest
from flask import Flask, g, jsonify

from service.api import auth
from service.config import Config
from service.errors import ConfigError, Forbidden, ServiceError, Unauthorized
from service.security import keys as security
from service.security.keys import KeyStore, create_key, list_keys, revoke_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys_file(tmp_path):
    return tmp_path / "keys.json"


@pytest.fixture
def predictor(keys_file):
    return create_key(keys_file, "predictor", ["predict", "read"])


@pytest.fixture
def admin(keys_file):
    return create_key(keys_file, "ops", ["admin"])


# -- KeyStore ------------------------------------------------------------------------------------


def test_file_stores_only_hashes(keys_file, predictor):
    text = keys_file.read_text()
    assert predictor.startswith("sk_") and len(predictor) > 40
    assert predictor not in text
    (entry,) = json.loads(text)["keys"]
    assert entry["id"] == "predictor"
    assert entry["sha256"] == security.hash_key(predictor)
    assert sorted(entry["scopes"]) == ["predict", "read"]
    assert entry["created_at"].endswith("Z")
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600


def test_authenticate_known_and_unknown(keys_file, predictor, admin):
    store = KeyStore(keys_file)
    assert store.authenticate(predictor).id == "predictor"
    assert store.authenticate(admin).id == "ops"
    assert store.authenticate(predictor + "x") is None
    assert store.authenticate(security.hash_key(predictor)) is None  # the hash is not a credential


def test_authenticate_compares_every_key_in_constant_time(keys_file, predictor, admin, monkeypatch):
    calls = []
    real = security.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    store = KeyStore(keys_file)
    assert store.authenticate(predictor).id == "predictor"  # the first key matches ...
    assert len(calls) == 2  # ... and the second is still compared
    calls.clear()
    assert store.authenticate("sk_nope") is None
    assert len(calls) == 2


def test_authorize_scopes(keys_file, predictor, admin):
    store = KeyStore(keys_file)
    assert store.authorize(predictor, "predict").id == "predictor"
    assert store.authorize(predictor, "read").id == "predictor"
    with pytest.raises(Forbidden) as info:
        store.authorize(predictor, "admin")
    assert info.value.details == {"required_scope": "admin"}
    assert predictor not in str(info.value.to_dict())
    # admin implies nothing else
    with pytest.raises(Forbidden):
        store.authorize(admin, "predict")
    for token in (None, "", "sk_unknown"):
        with pytest.raises(Unauthorized) as info:
            store.authorize(token, "read")
        challenges = [value for name, value in info.value.headers if name == "WWW-Authenticate"]
        assert [c.split()[0] for c in challenges] == ["Bearer", "Basic"]  # one header per challenge


def test_reload_on_change_at_most_once_per_interval(keys_file, predictor, caplog):
    clock = FakeClock()
    store = KeyStore(keys_file, clock=clock)
    assert store.authenticate(predictor) is not None
    revoke_key(keys_file, "predictor")
    clock.now += 0.5
    assert store.authenticate(predictor) is not None  # not looked at yet
    clock.now += 0.6
    assert store.authenticate(predictor) is None
    new = create_key(keys_file, "late", ["read"])
    clock.now += 1.1
    assert store.authenticate(new).id == "late"


def test_a_key_made_a_moment_ago_works_on_its_first_request(keys_file, predictor):
    """An unknown token makes the file be looked at now: no interval to wait after keys create."""
    clock = FakeClock()
    store = KeyStore(keys_file, clock=clock)
    assert store.authenticate(predictor) is not None  # the file was just looked at
    new = create_key(keys_file, "fresh", ["predict"])
    assert store.authenticate(new).id == "fresh"  # same instant: found by the forced look
    assert store.authenticate("sk_unknown") is None


def test_unchanged_file_is_not_reread(keys_file, predictor, monkeypatch):
    clock = FakeClock()
    store = KeyStore(keys_file, clock=clock)
    reads = []
    real = security._read_keys
    monkeypatch.setattr(security, "_read_keys", lambda p: reads.append(p) or real(p))
    for _ in range(3):
        clock.now += 2
        store.reload_if_changed()
    assert reads == []


def test_file_broken_later_keeps_last_good_keys(keys_file, predictor, caplog):
    clock = FakeClock()
    store = KeyStore(keys_file, clock=clock)
    keys_file.write_text("{not json")
    clock.now += 2
    with caplog.at_level(logging.ERROR, logger="service.security.keys"):
        assert store.authenticate(predictor).id == "predictor"
        clock.now += 2
        store.reload_if_changed()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # reported once, not on every check
    assert "not valid JSON" in errors[0].problem
    keys_file.unlink()
    clock.now += 2
    assert store.authenticate(predictor).id == "predictor"


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{oops", "not valid JSON"),
        ("[]", '{"keys": [...]}'),
        ('{"keys": [1]}', "keys[0] is not an object"),
        ('{"keys": [{"id": "Bad Id", "sha256": "' + "a" * 64 + '", "scopes": []}]}', "keys[0].id"),
        ('{"keys": [{"id": "a", "sha256": "abc", "scopes": []}]}', "keys[0].sha256"),
        ('{"keys": [{"id": "a", "sha256": "' + "a" * 64 + '", "scopes": ["root"]}]}', "keys[0].scopes"),
        (
            '{"keys": [{"id": "a", "sha256": "' + "a" * 64 + '", "scopes": []},'
            ' {"id": "a", "sha256": "' + "b" * 64 + '", "scopes": []}]}',
            "appears twice",
        ),
    ],
)
def test_malformed_file_at_startup_is_config_error(keys_file, content, problem):
    keys_file.write_text(content)
    with pytest.raises(ConfigError) as info:
        KeyStore(keys_file)
    assert str(info.value).startswith(f"API_KEYS_FILE={keys_file}: ")
    assert problem in str(info.value)


def test_missing_file_at_startup_is_config_error(keys_file):
    with pytest.raises(ConfigError, match="API_KEYS_FILE=.*does not exist"):
        KeyStore(keys_file)


def test_credentials_from_headers():
    get = security.credentials_from_headers
    assert get({"Authorization": "Bearer sk_a"}) == "sk_a"
    assert get({"Authorization": "bearer  sk_a "}) == "sk_a"
    assert get({"X-API-Key": "sk_b"}) == "sk_b"
    assert get({"Authorization": "Basic dXNlcjpwdw==", "X-API-Key": "sk_b"}) == "sk_b"
    assert get({"Authorization": "Bearer "}) is None
    assert get({}) is None


# -- Managing the file ---------------------------------------------------------------------------


def test_create_list_revoke(keys_file):
    assert list_keys(keys_file) == []
    create_key(keys_file, "a", ["read"])
    create_key(keys_file, "b.c-d_e", ["predict", "admin"])
    listed = list_keys(keys_file)
    assert [(k.id, k.scopes) for k in listed] == [("a", {"read"}), ("b.c-d_e", {"predict", "admin"})]
    assert "sha256" not in repr(listed)
    revoke_key(keys_file, "a")
    assert [k.id for k in list_keys(keys_file)] == ["b.c-d_e"]
    assert [p.name for p in keys_file.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "key_id, scopes, message",
    [
        ("Upper", ["read"], "invalid key id"),
        ("-dash", ["read"], "invalid key id"),
        ("a" * 65, ["read"], "invalid key id"),
        ("ok", ["read", "root"], "unknown scope(s) root"),
        ("ok", [], "at least one scope"),
        ("dup", ["read"], "already exists"),
    ],
)
def test_create_refuses(keys_file, key_id, scopes, message):
    create_key(keys_file, "dup", ["read"])
    with pytest.raises(ValueError) as info:
        create_key(keys_file, key_id, scopes)
    assert message in str(info.value)


def test_revoke_unknown(keys_file):
    with pytest.raises(ValueError, match="no key named 'ghost'"):
        revoke_key(keys_file, "ghost")


# -- Startup policy ------------------------------------------------------------------------------


def test_loopback_without_keys_opens_predict_and_read_to_local_requests_only(caplog, tmp_path):
    local = tmp_path / "local.json"
    with caplog.at_level(logging.WARNING, logger="service.security.keys"):
        policy = security.load_policy(Config(host="127.0.0.1", local_admin_keys_file=local))
    assert "WITHOUT authentication" in caplog.text and "admin calls" in caplog.text
    assert policy.store.path == local and policy.store.keys == ()
    assert policy.is_open(("predict",), local=True) and policy.is_open(("read", "admin"), local=True)
    assert not policy.is_open(("admin",), local=True)
    assert not policy.is_open(("predict",), local=False)


def test_public_address_without_keys_refuses_to_start():
    with pytest.raises(ConfigError) as info:
        security.load_policy(Config(host="0.0.0.0"))
    assert "API_KEYS_FILE" in str(info.value) and "ALLOW_UNAUTHENTICATED=1" in str(info.value)


def test_public_address_opt_in_opens_predict_and_read_to_everyone_never_admin(caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="service.security.keys"):
        policy = security.load_policy(Config(host="0.0.0.0", allow_unauthenticated=True,
                                             local_admin_keys_file=tmp_path / "local.json"))
    assert "WITHOUT authentication" in caplog.text
    assert policy.is_open(("predict",), local=False)
    assert not policy.is_open(("admin",), local=True)


def test_keys_file_wins_everywhere(keys_file, predictor):
    policy = security.load_policy(Config(host="0.0.0.0", api_keys_file=keys_file))
    assert isinstance(policy.store, KeyStore) and policy.store.path == keys_file
    assert not policy.is_open(("predict",), local=True)


def test_configured_but_missing_file_refuses_to_start(keys_file):
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        security.load_policy(Config(host="127.0.0.1", api_keys_file=keys_file))


def test_local_admin_key_is_made_once_hashed_and_owner_only(tmp_path):
    path = tmp_path / "var" / "local-admin-keys.json"
    plaintext = security.ensure_local_admin(path)
    assert plaintext and plaintext.startswith("sk_")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert plaintext not in path.read_text()
    (key,) = list_keys(path)
    assert key.id == "local-admin" and "admin" in key.scopes
    assert security.ensure_local_admin(path) is None  # never a second key, never the first one again
    assert len(list_keys(path)) == 1


def test_local_admin_keys_file_created_later_is_picked_up(tmp_path):
    path = tmp_path / "local.json"
    policy = security.load_policy(Config(local_admin_keys_file=path))
    policy.store.reload_interval = 0
    with pytest.raises(Unauthorized):
        policy.store.authorize("sk_anything", "admin")
    plaintext = security.ensure_local_admin(path)
    assert policy.store.authorize(plaintext, "admin").id == "local-admin"


# -- Flask integration ---------------------------------------------------------------------------


def make_app(config: Config) -> Flask:
    app = Flask("test_security")
    auth.init_app(app, config)

    @app.errorhandler(ServiceError)
    def handle(error: ServiceError):
        response = jsonify(error.to_dict())
        response.headers.extend(error.headers)  # add, not update: two WWW-Authenticate headers
        return response, error.status

    @app.post("/predict")
    @auth.require_scope("predict")
    def predict():
        return {"key_id": g.key_id}

    @app.put("/admin/<name>")
    @auth.require_scope("admin")
    def set_label(name: str):
        return {"key_id": g.key_id, "name": name}

    return app


@pytest.fixture
def client(keys_file, predictor, admin):
    return make_app(Config(api_keys_file=keys_file)).test_client()


def test_view_without_credentials_is_401(client):
    response = client.post("/predict")
    assert response.status_code == 401
    assert response.headers.getlist("WWW-Authenticate") == ['Bearer realm="models"',
                                                            'Basic realm="models", charset="UTF-8"']
    assert response.json["error"]["code"] == "unauthorized"


def test_view_with_unknown_key_is_401(client):
    response = client.post("/predict", headers={"Authorization": "Bearer sk_wrong"})
    assert response.status_code == 401
    assert "sk_wrong" not in response.get_data(as_text=True)


@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
def test_view_with_good_key_sets_key_id(client, predictor, style):
    headers = {"Authorization": f"Bearer {predictor}"} if style == "bearer" else {"X-API-Key": predictor}
    response = client.post("/predict", headers=headers)
    assert response.status_code == 200
    assert response.json == {"key_id": "predictor"}


def test_view_with_key_lacking_scope_is_403(client, predictor, admin):
    response = client.put("/admin/x", headers={"X-API-Key": predictor})
    assert response.status_code == 403
    body = response.get_data(as_text=True)
    assert response.json["error"]["details"] == {"required_scope": "admin"}
    assert predictor not in body
    assert client.put("/admin/x", headers={"X-API-Key": admin}).json == {"key_id": "ops", "name": "x"}


def test_revoked_key_stops_working_without_restart(keys_file, predictor):
    app = make_app(Config(api_keys_file=keys_file))
    app.extensions["security"].store.reload_interval = 0
    client = app.test_client()
    headers = {"X-API-Key": predictor}
    assert client.post("/predict", headers=headers).status_code == 200
    revoke_key(keys_file, "predictor")
    assert client.post("/predict", headers=headers).status_code == 401


def test_open_server_sets_no_key_id(tmp_path):
    client = make_app(Config(host="127.0.0.1", local_admin_keys_file=tmp_path / "local.json")).test_client()
    response = client.post("/predict")
    assert response.status_code == 200
    assert response.json == {"key_id": None}


def test_open_server_still_wants_the_local_admin_key_for_admin(tmp_path):
    path = tmp_path / "local.json"
    client = make_app(Config(host="127.0.0.1", local_admin_keys_file=path)).test_client()
    refused = client.put("/admin/x")
    assert refused.status_code == 401 and refused.json["error"]["details"] == {"reason": "admin_needs_key"}
    key = security.ensure_local_admin(path)
    client.application.extensions["security"].store.reload_if_changed(force=True)
    assert client.put("/admin/x", headers={"Authorization": f"Bearer {key}"}).json == {"key_id": "local-admin",
                                                                                         "name": "x"}


def test_forgotten_init_app_fails_closed():
    app = Flask("no_init")

    @app.get("/")
    @auth.require_scope("read")
    def index():
        return "open"

    assert app.test_client().get("/").status_code == 500


def test_unknown_scope_in_decorator_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown scope"):
        auth.require_scope("root")


@pytest.mark.parametrize("header, expected", [
    ("Basic " + base64.b64encode(b"anyone:sk_abc").decode(), "sk_abc"),
    ("Basic " + base64.b64encode(b":sk_abc").decode(), "sk_abc"),
    ("Basic " + base64.b64encode(b"user-only").decode(), None),
    ("Basic not-base64!!", None),
    ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), None),
])
def test_basic_auth_carries_the_key_as_its_password(header, expected):
    assert security.credentials_from_headers({"Authorization": header}) == expected

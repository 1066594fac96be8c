"""The trust model in-process: admin always needs a key, a proxied request is never local,
forwarded headers are believed from listed proxies only, and browsers cannot be made to
change anything cross-site or to read the API through a rebound DNS name."""

from __future__ import annotations

import pytest
from flask import request

from service.api import csrf
from service.security import keys as security

ROW = {"instances": [[50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]]}
JSON = {"Content-Type": "application/json"}
LABEL = "/v1/models/diabetes/labels/staging"


@pytest.fixture
def build(make_app, tmp_path):
    """``build(**settings)``: an app with an extra view echoing what it believes of the client."""

    def make(**settings):
        settings.setdefault("local_admin_keys_file", tmp_path / "var" / "local-admin-keys.json")
        app = make_app(**settings)

        @app.get("/_test/client")
        def client_address():
            return {"remote_addr": request.remote_addr, "scheme": request.scheme, "host": request.host}

        return app

    return make


@pytest.fixture
def admin_key(tmp_path):
    return security.ensure_local_admin(tmp_path / "var" / "local-admin-keys.json")


@pytest.fixture
def client(build, admin_key):
    return build().test_client()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **JSON}


# -- open mode: predict and read for direct loopback clients only; admin always with a key -------


def test_admin_without_a_key_is_refused_in_open_mode(client, admin_key):
    refused = client.put(LABEL, json={"version": 1})
    assert refused.status_code == 401
    assert refused.json["error"]["details"] == {"reason": "admin_needs_key"}
    assert client.post("/v1/models/diabetes:rollback", headers=JSON).status_code == 401
    assert client.delete(LABEL, headers=JSON).status_code == 401
    done = client.put(LABEL, json={"version": 1}, headers=bearer(admin_key))
    assert done.status_code == 200
    assert done.json["change"]["actor"] == "key:local-admin"


def test_admin_is_refused_even_before_any_local_key_exists(build, tmp_path):
    client = build().test_client()
    assert client.put(LABEL, json={"version": 1}).status_code == 401
    assert client.put(LABEL, json={"version": 1}, headers=bearer("sk_guess")).status_code == 401


def test_predict_and_read_stay_open_for_a_direct_loopback_client(client):
    assert client.post("/v1/models/diabetes:predict", json=ROW).status_code == 200
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/models/diabetes/history").status_code == 200


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-For": "203.0.113.9"},
    {"X-Real-IP": "203.0.113.9"},
    {"Forwarded": "for=203.0.113.9"},
    {"X-Forwarded-For": "127.0.0.1"},  # what a same-host proxy would say for a local browser
])
def test_a_forwarded_request_is_never_local(client, admin_key, headers):
    refused = client.post("/v1/models/diabetes:predict", json=ROW, headers=headers)
    assert refused.status_code == 401
    assert refused.json["error"]["details"] == {"reason": "not_local", "required_scope": "predict"}
    message = refused.json["error"]["message"]
    assert f"came through a proxy (it carries {next(iter(headers))})" in message
    assert "'predict' scope" in message and "keys create --name app --scopes predict" in message
    assert "admin" not in message
    assert client.get("/v1/models", headers=headers).status_code == 401
    with_key = client.post("/v1/models/diabetes:predict", json=ROW, headers={**headers, **bearer(admin_key)})
    assert with_key.status_code == 200


def test_a_peer_listed_as_a_proxy_is_never_local(build, tmp_path, admin_key):
    """A same-host proxy connects from 127.0.0.1 like a direct client, so once FORWARDED_ALLOW_IPS declares
    it, calls from that address need a key: the 401 says what was declared, why, and which key to make."""
    predictor = security.create_key(tmp_path / "var" / "local-admin-keys.json", "app", ["predict"])
    client = build(forwarded_allow_ips=("127.0.0.1",)).test_client()
    refused = client.post("/v1/models/diabetes:predict", json=ROW)
    assert refused.status_code == 401
    message = refused.json["error"]["message"]
    assert "came from 127.0.0.1, which FORWARDED_ALLOW_IPS=127.0.0.1 declares a proxy" in message
    assert "even without forwarded headers" in message and "--scopes predict" in message
    read = client.get("/v1/models")
    assert read.json["error"]["details"] == {"reason": "not_local", "required_scope": "read"}
    assert client.post("/v1/models/diabetes:predict", json=ROW, headers=bearer(predictor)).status_code == 200
    assert client.put(LABEL, json={"version": 1}, headers=bearer(predictor)).status_code == 403
    # a peer outside the declared proxies that is still loopback stays local
    assert client.post("/v1/models/diabetes:predict", json=ROW, environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


@pytest.mark.parametrize("peer", ["10.0.0.7", "192.0.2.1", ""])
def test_a_peer_that_is_not_loopback_is_not_local(client, peer):
    response = client.post("/v1/models/diabetes:predict", json=ROW, environ_base={"REMOTE_ADDR": peer})
    assert response.status_code == 401
    assert ("another machine" if peer else "Unix socket") in response.json["error"]["message"]


def test_ipv6_and_mapped_loopback_peers_are_local(client):
    for peer in ("::1", "::ffff:127.0.0.1"):
        assert client.get("/v1/models", environ_base={"REMOTE_ADDR": peer}).status_code == 200


def test_opt_in_opens_predict_to_every_client_but_never_admin(build, tmp_path, admin_key):
    client = build(host="127.0.0.2", allow_unauthenticated=True).test_client()
    far = {"REMOTE_ADDR": "192.0.2.1"}
    assert client.post("/v1/models/diabetes:predict", json=ROW, environ_base=far).status_code == 200
    assert client.put(LABEL, json={"version": 1}, environ_base=far).status_code == 401


def test_keys_file_turns_everything_on(build, tmp_path):
    path = tmp_path / "keys.json"
    predictor = security.create_key(path, "app", ["predict"])
    client = build(api_keys_file=path).test_client()
    assert client.post("/v1/models/diabetes:predict", json=ROW).status_code == 401
    assert client.post("/v1/models/diabetes:predict", json=ROW, headers=bearer(predictor)).status_code == 200


def test_basic_and_bearer_challenges_are_two_headers(client):
    response = client.put(LABEL, json={"version": 1})
    assert response.headers.getlist("WWW-Authenticate") == ['Bearer realm="models"',
                                                            'Basic realm="models", charset="UTF-8"']


# -- forwarded headers: believed from FORWARDED_ALLOW_IPS only ---------------------------------


def test_a_listed_proxy_names_the_client(build, tmp_path):
    client = build(forwarded_allow_ips=("10.0.0.0/8",)).test_client()
    seen = client.get("/_test/client", environ_base={"REMOTE_ADDR": "10.1.2.3"},
                      headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9", "X-Forwarded-Proto": "https",
                               "X-Forwarded-Host": "localhost"}).json
    assert seen == {"remote_addr": "203.0.113.9", "scheme": "https", "host": "localhost"}


@pytest.mark.parametrize("allowed", [(), ("10.0.0.0/8",)])
def test_anyone_else_cannot_pick_their_address(build, tmp_path, allowed):
    client = build(forwarded_allow_ips=allowed).test_client()
    seen = client.get("/_test/client", environ_base={"REMOTE_ADDR": "192.0.2.1"},
                      headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}).json
    assert seen["remote_addr"] == "192.0.2.1" and seen["scheme"] == "http"


# -- state-changing requests: JSON only, never cross-site ---------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/csv"])
def test_a_change_needs_a_json_content_type_even_without_a_body(client, admin_key, content_type):
    headers = {"Authorization": f"Bearer {admin_key}"}
    if content_type:
        headers["Content-Type"] = content_type
    for method, url in (("POST", "/v1/models/diabetes:rollback"), ("DELETE", LABEL),
                        ("POST", "/v1/models/diabetes:predict")):
        response = client.open(url, method=method, headers=headers)
        assert response.status_code == 415, (method, url)
        assert response.json["error"]["code"] == "unsupported_media_type"
        assert response.json["error"]["details"] == {"expected": "application/json"}


def test_an_empty_json_change_reaches_the_view(client, admin_key):
    assert client.put(LABEL, json={"version": 1}, headers=bearer(admin_key)).status_code == 200
    assert client.delete(LABEL, headers=bearer(admin_key)).status_code == 200


def test_an_unknown_url_is_still_a_404(client):
    assert client.post("/v1/nothing/here", data="x", content_type="text/plain").status_code == 404


@pytest.mark.parametrize("site", ["cross-site", "same-site", "CROSS-SITE"])
def test_a_cross_site_change_is_refused(client, admin_key, site):
    response = client.post("/v1/models/diabetes:predict", json=ROW, headers={"Sec-Fetch-Site": site})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "cross_site_request"
    assert client.put(LABEL, json={"version": 1}, headers={**bearer(admin_key), "Sec-Fetch-Site": site}).status_code == 403


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_a_same_origin_or_typed_change_is_allowed(client, site):
    assert client.post("/v1/models/diabetes:predict", json=ROW, headers={"Sec-Fetch-Site": site}).status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:9999", "null", "http://localhost.evil.example",
                                    "not a url"])
def test_an_origin_that_is_not_this_server_is_refused(client, origin):
    response = client.post("/v1/models/diabetes:predict", json=ROW, headers={"Origin": origin})
    assert response.status_code == 403 and response.json["error"]["code"] == "cross_site_request"


@pytest.mark.parametrize("origin, host", [("http://localhost", "localhost"), ("http://127.0.0.1:8000", "127.0.0.1:8000"),
                                          ("https://localhost", "localhost:443"), ("http://[::1]:8000", "[::1]:8000")])
def test_this_servers_own_origin_is_allowed(client, origin, host):
    response = client.post("/v1/models/diabetes:predict", json=ROW, headers={"Origin": origin, "Host": host})
    assert response.status_code == 200


def test_reads_are_not_checked_for_origin(client):
    assert client.get("/v1/models", headers={"Origin": "https://evil.example"}).status_code == 200


# -- Host: the DNS-rebinding guard --------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil.example"])
def test_a_host_this_server_does_not_serve_is_refused_even_for_reads(client, host):
    for response in (client.get("/v1/models", headers={"Host": host}),
                     client.post("/v1/models/diabetes:predict", json=ROW, headers={"Host": host})):
        assert response.status_code == 403
        assert response.json["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:8000", "[::1]:8000", "localhost."])
def test_loopback_names_are_served(client, host):
    assert client.get("/v1/models", headers={"Host": host}).status_code == 200


def test_by_default_a_proxy_filters_the_names_it_forwards(build, tmp_path):
    client = build(forwarded_allow_ips=("10.0.0.1",)).test_client()
    from_proxy = {"environ_base": {"REMOTE_ADDR": "10.0.0.1"}, "headers": {"Host": "models.example.com"}}
    assert client.get("/healthz", **from_proxy).status_code == 200
    forwarded = {"X-Forwarded-For": "198.51.100.7", "Host": "models.example.com"}
    assert client.get("/healthz", headers=forwarded).status_code == 200
    assert client.get("/v1/models", headers=forwarded).status_code == 401  # proxied: never open
    assert client.get("/healthz", headers={"Host": "models.example.com"}).status_code == 403  # straight to us
    named = build(forwarded_allow_ips=("10.0.0.1",), allowed_hosts=("localhost",))
    assert named.test_client().get("/healthz", **from_proxy).status_code == 403  # a set list applies to all


def test_allowed_hosts_replace_the_defaults_and_star_serves_any(build, tmp_path):
    named = build(allowed_hosts=("models.example.com",)).test_client()
    assert named.get("/healthz", headers={"Host": "models.example.com"}).status_code == 200
    assert named.get("/healthz", headers={"Host": "localhost"}).status_code == 403
    anything = build(allowed_hosts=("*",)).test_client()
    assert anything.get("/healthz", headers={"Host": "whatever.example"}).status_code == 200


def test_a_form_type_cannot_be_declared_acceptable():
    with pytest.raises(ValueError, match="cross-site form"):
        csrf.accepts("text/plain")
    assert csrf.accepts("text/csv")(lambda: None).accepted_body_types == ("text/csv",)

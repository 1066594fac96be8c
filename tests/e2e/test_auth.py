"""End to end: API keys and scopes on a real server, and the open-on-loopback policy."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from service.security.keys import create_key
from tests.conftest import GUNICORN, REPO, free_port, server_env

pytestmark = pytest.mark.e2e

ROW = {"instances": [[50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]]}


@pytest.fixture
def keys(tmp_path):
    path = tmp_path / "keys.json"
    return path, {
        "predict": create_key(path, "app", ["predict"]),
        "read": create_key(path, "dashboard", ["read"]),
        "admin": create_key(path, "ops", ["predict", "read", "admin"]),
    }


def test_keys_and_scopes(demo_root, server_factory, keys):
    path, key = keys
    server = server_factory(demo_root, API_KEYS_FILE=str(path))
    anonymous = server.post("/v1/models/diabetes:predict", json=ROW)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = server.post("/v1/models/diabetes:predict", json=ROW, headers={"Authorization": "Bearer sk_nope"})
    assert wrong.status_code == 401
    reader = server.post("/v1/models/diabetes:predict", json=ROW, headers={"Authorization": f"Bearer {key['read']}"})
    assert reader.status_code == 403 and reader.json()["error"]["details"]["required_scope"] == "predict"
    assert key["read"] not in reader.text
    bearer = server.post("/v1/models/diabetes:predict", json=ROW, headers={"Authorization": f"Bearer {key['predict']}"})
    header = server.post("/v1/models/diabetes:predict", json=ROW, headers={"X-API-Key": key["predict"]})
    assert bearer.status_code == header.status_code == 200
    assert server.get("/v1/models", headers={"X-API-Key": key["predict"]}).status_code == 403
    assert server.get("/v1/models", headers={"X-API-Key": key["read"]}).status_code == 200
    assert server.get("/healthz").status_code == 200 and server.get("/readyz").status_code == 200
    assert key["predict"] not in server.log_path.read_text()


def test_revoked_key_stops_working_without_restart(demo_root, server_factory, keys):
    path, key = keys
    server = server_factory(demo_root, API_KEYS_FILE=str(path))
    headers = {"X-API-Key": key["predict"]}
    assert server.post("/v1/models/diabetes:predict", json=ROW, headers=headers).status_code == 200
    revoke = subprocess.run([sys.executable, "-m", "service", "keys", "revoke", "app", "--file", str(path)],
                            cwd=REPO, capture_output=True, text=True)
    assert revoke.returncode == 0, revoke.stderr
    deadline = time.monotonic() + 10
    statuses = set()
    while time.monotonic() < deadline:
        # both workers must have noticed: several consecutive 401s
        statuses = {server.post("/v1/models/diabetes:predict", json=ROW, headers=headers).status_code for _ in range(6)}
        if statuses == {401}:
            break
        time.sleep(0.3)
    assert statuses == {401}


def test_open_on_loopback_says_so(demo_server):
    warnings = [r for r in demo_server.log_records() if r.get("level") == "warning"]
    assert any("authentication" in r["message"].lower() for r in warnings)


def run_gunicorn(demo_root, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:application"], cwd=REPO,
                          env=server_env(demo_root, free_port(), **env), capture_output=True, text=True, timeout=60)


def test_refuses_to_start_open_on_a_public_address(demo_root):
    result = run_gunicorn(demo_root, HOST="0.0.0.0")
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "API_KEYS_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_variable_is_named_at_startup(demo_root):
    result = run_gunicorn(demo_root, PORT="many")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("configuration error: PORT='many'")


def test_public_address_allowed_when_explicitly_told(demo_root, server_factory):
    server = server_factory(demo_root, HOST="127.0.0.2", ALLOW_UNAUTHENTICATED="1", wait=None)
    server_url = f"http://127.0.0.2:{server.port}"
    deadline = time.monotonic() + 30
    import requests

    while time.monotonic() < deadline:
        try:
            if requests.get(server_url + "/readyz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    assert requests.post(server_url + "/v1/models/diabetes:predict", json=ROW, timeout=10).status_code == 200


def test_refuses_an_open_public_listener_given_on_the_command_line(demo_root):
    """HOST says loopback, but Gunicorn is told to bind everywhere: the real listener decides."""
    port = free_port()
    result = subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:application"], cwd=REPO,
                            env={**server_env(demo_root, port), "GUNICORN_CMD_ARGS": f"--bind 0.0.0.0:{port}"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "without API_KEYS_FILE" in result.stderr and "Booting worker" not in result.stderr


def test_a_browser_opens_the_monitoring_page_with_basic_auth(demo_root, server_factory, keys):
    path, key = keys
    server = server_factory(demo_root, API_KEYS_FILE=str(path))
    challenge = server.get("/monitoring")
    assert challenge.status_code == 401 and "Basic" in challenge.headers["WWW-Authenticate"]
    page = server.get("/monitoring", auth=("dashboard", key["read"]))
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert server.get("/monitoring", auth=("dashboard", key["predict"])).status_code == 403

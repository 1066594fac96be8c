"""End to end: what API keys and the start-up policy do to real Gunicorn processes.

The route x key matrix, how a refused key is told and Basic auth are tested in-process in
tests/api/test_auth.py; here, revocation reaching every worker and the listener checks at start.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from service.security.keys import create_key
from tests.builders import wait_until
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


def test_revoked_key_stops_working_without_restart(demo_root, server_factory, keys):
    path, key = keys
    server = server_factory(demo_root, API_KEYS_FILE=str(path))
    headers = {"X-API-Key": key["predict"]}
    assert server.post("/v1/models/diabetes:predict", json=ROW, headers=headers).status_code == 200
    revoke = subprocess.run([sys.executable, "-m", "service", "keys", "revoke", "app", "--file", str(path)],
                            cwd=REPO, capture_output=True, text=True)
    assert revoke.returncode == 0, revoke.stderr

    def refused_by_every_worker() -> bool:  # both workers must have noticed: several consecutive 401s
        return {server.post("/v1/models/diabetes:predict", json=ROW, headers=headers).status_code
                for _ in range(6)} == {401}

    wait_until(refused_by_every_worker, timeout=10, interval=0.3, message="revoked key refused")
    assert key["predict"] not in server.log_path.read_text()  # nor in Gunicorn's access log


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

    def ready() -> bool:
        try:
            return requests.get(server_url + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout=30, interval=0.2, message="server on 127.0.0.2 ready")
    assert requests.post(server_url + "/v1/models/diabetes:predict", json=ROW, timeout=10).status_code == 200


def test_refuses_an_open_public_listener_given_on_the_command_line(demo_root):
    """HOST says loopback, but Gunicorn is told to bind everywhere: the real listener decides."""
    port = free_port()
    result = subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:application"], cwd=REPO,
                            env={**server_env(demo_root, port), "GUNICORN_CMD_ARGS": f"--bind 0.0.0.0:{port}"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "without API_KEYS_FILE" in result.stderr and "Booting worker" not in result.stderr

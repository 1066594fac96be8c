"""``wsgi.application`` is a plain PEP 3333 callable: it runs unchanged under waitress too."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import REPO, free_port, server_env

pytestmark = pytest.mark.e2e


def test_serves_under_waitress(demo_root, tmp_path):
    port = free_port()
    env = server_env(demo_root, port, REGISTRY_POLL_SECONDS="0")
    with open(tmp_path / "waitress.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "waitress", "--listen", f"127.0.0.1:{port}", "wsgi:application"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        answer = requests.post(base + "/v1/models/breast-cancer:predict", timeout=10,
                               json={"instances": [[10.0] * 30], "parameters": {"probabilities": True}})
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
        assert answer.json()["classes"] == [0, 1] and len(answer.json()["probabilities"][0]) == 2
        missing = requests.get(base + "/v1/models/nope", timeout=10)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_pep3333_callable_in_process(demo_root, tmp_path, request):
    """Call the WSGI callable by hand, as any PEP 3333 server would."""
    from wsgiref.util import setup_testing_defaults

    from service.app import close_app, create_app
    from service.config import Config

    app = create_app(Config(artifacts_dir=demo_root, poll_seconds=0, guard_seconds=0,
                            database_url=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    request.addfinalizer(lambda: close_app(app))
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO="/healthz", REQUEST_METHOD="GET")
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(app.wsgi_app(environ, start_response))
    assert captured["status"] == "200 OK" and body == b'{"status":"ok"}'
    assert "X-Request-ID" in captured["headers"]

"""Apache from deploy/apache/prediction-server.conf (mod_proxy) in front of real Gunicorn."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.builders import wait_until
from tests.conftest import Server, free_port, start_server
from tests.deploy.conftest import (
    APACHE_PROXY_MODULES,
    DEPLOY,
    Proxy,
    assert_error_shape,
    public_dir,
    render,
    slow_clients,
    start_apache,
)

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
PREDICT = "/v1/models/diabetes:predict"
BIG_BODY = b'{"instances": [' + b"[1.0]," * (20 * 1024 * 1024 // 6) + b"[1.0]]}"  # ~20 MB > 16 MiB


def apache_site(upstream_port: int, port: int, errors: Path, **replacements: str) -> str:
    """deploy/apache/prediction-server.conf on ``port``, proxying to Gunicorn on ``upstream_port``."""
    return render(DEPLOY / "apache" / "prediction-server.conf", {
        "<VirtualHost *:80>": f"<VirtualHost 127.0.0.1:{port}>",
        "http://127.0.0.1:8000/": f"http://127.0.0.1:{upstream_port}/",
        "/var/www/prediction-server/errors/": f"{errors}/",
        **replacements,
    })


def error_pages(stack: ExitStack) -> Path:
    """The shipped JSON error pages, where Apache's unprivileged children can read them."""
    folder = public_dir("ps-errors-")
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    shutil.copytree(DEPLOY / "apache" / "errors", folder, dirs_exist_ok=True)
    for page in folder.iterdir():
        page.chmod(0o644)
    return folder


def apache_in_front(stack: ExitStack, workdir: Path, upstream_port: int, **replacements: str) -> Proxy:
    port = free_port()
    site = apache_site(upstream_port, port, error_pages(stack), **replacements)
    proxy = start_apache(workdir, site, port, APACHE_PROXY_MODULES)
    stack.callback(proxy.stop)
    return proxy


@pytest.fixture(scope="module")
def apache(tcp_gunicorn: Server, tmp_path_factory: pytest.TempPathFactory, api_key: tuple[Path, str]) -> Iterator[Proxy]:
    """Apache in front of the shared Gunicorn, for the module's read-only tests."""
    with ExitStack() as stack:
        proxy = apache_in_front(stack, tmp_path_factory.mktemp("apache"), tcp_gunicorn.port)
        proxy.gunicorn = tcp_gunicorn
        proxy.session.headers["X-API-Key"] = api_key[1]
        proxy.wait_ready()
        yield proxy


def test_prediction_through_apache(apache):
    response = apache.post(PREDICT, json={"instances": [ROW]})
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == "1" and len(response.json()["predictions"]) == 1
    # no id from the client: mod_unique_id's, in an alphabet the app keeps, so both logs agree
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[A-Za-z0-9._-]{20,}", request_id)
    # Apache writes its access log line once the response has gone out: wait for it
    wait_until(lambda: request_id in apache.log("prediction-server-access.log"), timeout=10,
               message="the request id in Apache's access log")
    assert apache.get("/healthz", headers={"X-Request-ID": "client-id-2"}).headers["X-Request-ID"] == "client-id-2"
    assert_error_shape(apache.get("/metrics"), 404, "not_found")  # scraped on the app's own port only


def test_oversized_body_gets_the_json_413(apache):
    response = apache.post(PREDICT, data=BIG_BODY, headers={"Content-Type": "application/json", "X-Request-ID": "big-2"})
    error = assert_error_shape(response, 413, "payload_too_large")
    assert error["details"]["limit_bytes"] == 16 * 1024 * 1024 and response.headers["X-Request-ID"] == "big-2"
    assert "big-2" not in apache.gunicorn.log_path.read_text()  # refused by Apache


def test_slow_clients_do_not_hold_the_workers(apache):
    """mod_reqtimeout and request spooling (proxy-sendcl): trickling clients never reach the sync workers."""
    with slow_clients(apache.port, PREDICT, count=4, headers=dict(apache.session.headers)):
        for _ in range(3):
            started = time.monotonic()
            assert apache.get("/healthz", timeout=2).status_code == 200
            assert time.monotonic() - started < 1.0


def test_the_apps_own_413_is_not_turned_into_a_502(apache, tmp_path: Path):
    """With Apache's own limit raised, the app refuses the body; it reads it first, so Apache relays the 413."""
    with ExitStack() as stack:
        lenient = apache_in_front(stack, tmp_path, apache.gunicorn.port,
                                  **{"-gt 16777216": "-gt 67108864"})
        lenient.session.headers.update(apache.session.headers)
        for _ in range(2):
            response = lenient.post(PREDICT, data=BIG_BODY, headers={"Content-Type": "application/json"})
            error = assert_error_shape(response, 413, "payload_too_large")
            assert "limit_bytes" not in error["details"]  # the app's answer, not Apache's page


def test_gunicorn_down_is_json(tmp_path: Path):
    with ExitStack() as stack:
        down = apache_in_front(stack, tmp_path, free_port())  # nothing listens there: Apache says 503
        assert_error_shape(down.post(PREDICT, json={"instances": [ROW]}), 503, "service_unavailable")


def test_prediction_through_apache_over_a_unix_socket(demo_root: Path, tmp_path: Path, api_key: tuple[Path, str]):
    """The commented Unix-socket ProxyPass works as written."""
    with ExitStack() as stack:
        sock_dir = public_dir("ps-")
        stack.callback(shutil.rmtree, sock_dir, ignore_errors=True)
        server = start_server(demo_root, tmp_path, wait=None, API_KEYS_FILE=str(api_key[0]),
                              GUNICORN_CMD_ARGS=f"--bind unix:{sock_dir}/gunicorn.sock")
        stack.callback(server.stop)
        unix = "ProxyPass        / unix:/run/prediction-server/gunicorn.sock|http://localhost/"
        proxy = apache_in_front(stack, tmp_path / "apache", 0, **{
            "    ProxyPass        / http://127.0.0.1:0/": "    # ProxyPass        / http://127.0.0.1:0/",
            f"    # {unix}": "    " + unix.replace("/run/prediction-server", str(sock_dir)),
        })
        proxy.wait_ready()
        response = proxy.post(PREDICT, json={"instances": [ROW]}, headers={"X-API-Key": api_key[1]})
        assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({"X-API-Key": "sk_not-a-key"}, 401, "unauthorized"),                  # refused before the body is read
    ({"Content-Type": "text/csv"}, 415, "unsupported_media_type"),        # refused before the body is read
])
def test_an_early_refusal_of_a_large_body_is_relayed_not_turned_into_a_502(apache, headers, status, code):
    body = b'{"instances": [' + b"[1.0]," * (10 * 1024 * 1024 // 6) + b"[1.0]]}"  # ~10 MB, under the limit
    for _ in range(2):
        response = apache.post(PREDICT, data=body, headers={"Content-Type": "application/json", **headers})
        assert_error_shape(response, status, code)

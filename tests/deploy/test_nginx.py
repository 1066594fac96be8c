"""Nginx from deploy/nginx/prediction-server.conf in front of real Gunicorn."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from tests.conftest import Server, free_port, start_server
from tests.deploy.conftest import (
    DEPLOY,
    NGINX,
    Proxy,
    assert_error_shape,
    nginx_site,
    public_dir,
    reload_nginx,
    render,
    slow_clients,
    start_nginx,
    wait_until,
    write_nginx_conf,
)

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
PREDICT = "/v1/models/diabetes:predict"
BIG_BODY = b'{"instances": [' + b"[1.0]," * (20 * 1024 * 1024 // 6) + b"[1.0]]}"  # ~20 MB > 16 MiB


def gunicorn_and_nginx(artifacts: Path, workdir: Path, stack: ExitStack, api_key: tuple[Path, str],
                       unix: bool = True) -> Proxy:
    """Gunicorn on a Unix socket (or TCP), Nginx in front; both stopped when ``stack`` closes."""
    keys_file, key = api_key
    if unix:
        sock_dir = public_dir("ps-")
        stack.callback(shutil.rmtree, sock_dir, ignore_errors=True)
        server = start_server(artifacts, workdir, wait=None, API_KEYS_FILE=str(keys_file),
                              GUNICORN_CMD_ARGS=f"--bind unix:{sock_dir}/g.sock")
        upstream = f"unix:{sock_dir}/g.sock"
    else:
        server = start_server(artifacts, workdir, API_KEYS_FILE=str(keys_file))
        upstream = f"127.0.0.1:{server.port}"
    stack.callback(server.stop)
    port = free_port()
    proxy = start_nginx(workdir / "nginx", nginx_site(upstream, port), port)
    stack.callback(proxy.stop)
    proxy.gunicorn = server
    proxy.session.headers["X-API-Key"] = key
    proxy.wait_ready()
    return proxy


@pytest.fixture(scope="module")
def nginx(demo_root: Path, tmp_path_factory: pytest.TempPathFactory, api_key: tuple[Path, str]) -> Iterator[Proxy]:
    """One Gunicorn on a Unix socket behind Nginx, shared by the module's read-only tests."""
    with ExitStack() as stack:
        yield gunicorn_and_nginx(demo_root, tmp_path_factory.mktemp("nginx"), stack, api_key)


def test_prediction_through_nginx(nginx):
    response = nginx.post(PREDICT, json={"instances": [ROW]})
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == "1" and len(response.json()["predictions"]) == 1
    # no id from the client: Nginx's $request_id (32 hex) reached the app, which echoed it
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert nginx.get("/healthz", headers={"X-Request-ID": "client-id-1"}).headers["X-Request-ID"] == "client-id-1"
    assert_error_shape(nginx.get("/metrics"), 404, "not_found")  # scraped on the app's own port only


def test_prediction_through_nginx_over_tcp(tcp_gunicorn: Server, tmp_path: Path, api_key: tuple[Path, str]):
    port = free_port()
    with ExitStack() as stack:
        proxy = start_nginx(tmp_path, nginx_site(f"127.0.0.1:{tcp_gunicorn.port}", port), port)
        stack.callback(proxy.stop)
        response = proxy.post(PREDICT, json={"instances": [ROW]}, headers={"X-API-Key": api_key[1]})
        assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"


def test_oversized_body_gets_the_json_413(nginx):
    response = nginx.post(PREDICT, data=BIG_BODY, headers={"Content-Type": "application/json", "X-Request-ID": "big-1"})
    error = assert_error_shape(response, 413, "payload_too_large")
    assert error["details"]["limit_bytes"] == 16 * 1024 * 1024 and response.headers["X-Request-ID"] == "big-1"
    # refused by Nginx: Gunicorn never saw it
    assert "big-1" not in nginx.gunicorn.log_path.read_text()


def test_slow_clients_do_not_hold_the_workers(nginx):
    """Slow clients (headers or body trickling in) would pin both sync workers; Nginx absorbs them."""
    with slow_clients(nginx.port, PREDICT, count=4, headers=dict(nginx.session.headers)):
        for _ in range(3):
            started = time.monotonic()
            assert nginx.get("/healthz", timeout=2).status_code == 200
            assert time.monotonic() - started < 1.0


def test_bad_gateway_and_timeout_are_json(tmp_path: Path, proxy_factory: Callable[[Proxy], Proxy], short_dir: Path):
    """Nginx's own 502 (nothing listens) and 504 (nothing answers) in the one error shape."""
    port = free_port()
    site = nginx_site(f"unix:{short_dir / 'nobody.sock'}", port)
    down = proxy_factory(start_nginx(tmp_path / "down", site, port))
    assert_error_shape(down.post(PREDICT, json={"instances": [ROW]}), 502, "bad_gateway")

    with socket.socket(socket.AF_UNIX) as silent:  # accepts (the backlog does) and never answers
        silent.bind(str(short_dir / "silent.sock"))
        silent.listen(8)
        port = free_port()
        site = nginx_site(f"unix:{short_dir / 'silent.sock'}", port,
                          **{"proxy_read_timeout 65s;": "proxy_read_timeout 1s;"})
        slow = proxy_factory(start_nginx(tmp_path / "silent", site, port))
        assert_error_shape(slow.get("/healthz", headers={"X-Request-ID": "slow-1"}), 504, "gateway_timeout")


def test_graceful_reloads_drop_nothing(demo_root: Path, tmp_path: Path, api_key: tuple[Path, str]):
    """HUP to Gunicorn and ``nginx -s reload`` while a thread pool sends 300 predictions."""
    with ExitStack() as stack:
        _reload_under_load(gunicorn_and_nginx(demo_root, tmp_path, stack, api_key))


def _reload_under_load(nginx: Proxy) -> None:
    total, done = 300, []
    old_workers = set(nginx.gunicorn.worker_pids())
    old_nginx_workers = set(children(nginx.proc.pid))

    def predict(i: int) -> int:
        with requests.Session() as session:
            status = session.post(nginx.base + PREDICT, json={"instances": [ROW]}, timeout=30,
                                  headers=nginx.session.headers).status_code
        done.append(i)
        return status

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(predict, i) for i in range(total)]
        wait_until(lambda: len(done) >= 50, 30, message="the first 50 predictions")
        os.kill(nginx.gunicorn.proc.pid, signal.SIGHUP)
        reload_nginx(nginx)
        left_after_reloads = total - len(done)
        statuses = [future.result() for future in futures]
    assert left_after_reloads > 0  # the reloads happened under load, not after it
    assert statuses == [200] * total
    # both reloads really happened: Gunicorn and Nginx replaced their workers
    wait_until(lambda: not old_workers & set(nginx.gunicorn.worker_pids()), 30, message="new Gunicorn workers")
    wait_until(lambda: not old_nginx_workers & set(children(nginx.proc.pid)), 30, message="new Nginx workers")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_tls_config_passes_nginx_t(tmp_path: Path):
    """The HTTPS server block, with a throwaway certificate, is one Nginx accepts."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    site = render(DEPLOY / "nginx" / "prediction-server-tls.conf", {
        "listen 80;": f"listen 127.0.0.1:{free_port()};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{free_port()} ssl http2;",
        "/etc/ssl/prediction-server/fullchain.pem": str(cert),
        "/etc/ssl/prediction-server/privkey.pem": str(key),
    })
    conf = write_nginx_conf(tmp_path / "nginx", site)
    result = subprocess.run([NGINX, "-t", "-p", f"{tmp_path}/nginx/", "-e", str(tmp_path / "nginx" / "error.log"),
                             "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_an_open_loopback_server_behind_nginx_is_not_open_through_it(demo_root: Path, tmp_path: Path):
    """No API_KEYS_FILE: direct loopback clients may predict, but nothing through the proxy is "local"."""
    with ExitStack() as stack:
        server = start_server(demo_root, tmp_path, LOCAL_ADMIN_KEYS_FILE=str(tmp_path / "local-admin.json"))
        stack.callback(server.stop)
        port = free_port()
        proxy = start_nginx(tmp_path / "nginx", nginx_site(f"127.0.0.1:{server.port}", port), port)
        stack.callback(proxy.stop)
        proxy.wait_listening()
        label = "/v1/models/diabetes/labels/staging"
        # an anonymous admin change through the proxy: refused, and the registry is untouched
        through = proxy.session.put(proxy.base + label, json={"version": 1})
        assert assert_error_shape(through, 401, "unauthorized")["details"]["reason"] == "admin_needs_key"
        # predictions through the proxy need a key too; straight from loopback they do not
        proxied = proxy.post(PREDICT, json={"instances": [ROW]})
        assert assert_error_shape(proxied, 401, "unauthorized")["details"]["reason"] == "not_local"
        assert server.post(PREDICT, json={"instances": [ROW]}).status_code == 200
        # and admin needs a key even straight from loopback
        direct = server.session.put(server.base + label, json={"version": 1}, timeout=30)
        assert assert_error_shape(direct, 401, "unauthorized")["details"]["reason"] == "admin_needs_key"
        assert "staging" not in server.get("/v1/models/diabetes").json().get("labels", {})

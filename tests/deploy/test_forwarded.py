"""The client's address reaches Gunicorn's access log through Nginx and Apache, and a client cannot forge it."""

from __future__ import annotations

import http.client
import json
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import Server, free_port
from tests.deploy.conftest import (
    APACHE_PROXY_MODULES,
    DEPLOY,
    nginx_site,
    public_dir,
    render,
    start_apache,
    start_nginx,
    wait_until,
)

pytestmark = pytest.mark.e2e

CLIENT = "127.0.0.2"  # another loopback address, so the client and the proxy (127.0.0.1) differ
FORGED = "203.0.113.9"


def start_proxy(kind: str, upstream_port: int, workdir: Path, stack: ExitStack):
    port = free_port()
    if kind == "nginx":
        return start_nginx(workdir, nginx_site(f"127.0.0.1:{upstream_port}", port), port)
    errors = public_dir("ps-errors-")
    stack.callback(shutil.rmtree, errors, ignore_errors=True)
    site = render(DEPLOY / "apache" / "prediction-server.conf", {
        "<VirtualHost *:80>": f"<VirtualHost 127.0.0.1:{port}>",
        "http://127.0.0.1:8000/": f"http://127.0.0.1:{upstream_port}/",
        "/var/www/prediction-server/errors/": f"{errors}/",
    })
    return start_apache(workdir, site, port, APACHE_PROXY_MODULES)


def get_from(source: str, port: int, path: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize("kind", ["nginx", "apache"])
def test_access_log_shows_the_forwarded_client(kind: str, tcp_gunicorn: Server, tmp_path: Path,
                                               api_key: tuple[Path, str]):
    server = tcp_gunicorn  # FORWARDED_ALLOW_IPS=127.0.0.1: it believes the proxy's forwarded headers
    with ExitStack() as stack:
        proxy = start_proxy(kind, server.port, tmp_path / kind, stack)
        stack.callback(proxy.stop)
        proxy.wait_ready()

        request_id = f"forwarded-{kind}"
        status = get_from(CLIENT, proxy.port, "/v1/models",
                          {"X-Request-ID": request_id, "X-API-Key": api_key[1], "X-Forwarded-For": FORGED})
        assert status == 200

        def access_record() -> dict | None:
            for line in server.log_path.read_text().splitlines():
                if request_id in line and line.startswith("{"):
                    record = json.loads(line)
                    if record.get("logger") == "gunicorn.access":
                        return record["http"]
            return None

        entry = wait_until(access_record, 10, message="the access log line")
        # the client as the proxy saw it; the address the client wrote in the header is not believed
        assert entry["remote"] == CLIENT, entry
        assert FORGED not in json.dumps(entry)

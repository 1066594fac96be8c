"""deploy/systemd/: the units pass systemd's own checker, and Gunicorn serves on a socket systemd hands it."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GUNICORN, REPO, server_env
from tests.deploy.conftest import render, wait_until

pytestmark = pytest.mark.e2e

FOLDER = REPO / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing")
def test_units_pass_systemd_analyze_verify(tmp_path: Path):
    (tmp_path / "environment").write_text((FOLDER / "environment.example").read_text())
    service = render(FOLDER / "prediction-server.service", {
        "/srv/prediction-server/.venv/bin/gunicorn": str(GUNICORN),
        "WorkingDirectory=/srv/prediction-server": f"WorkingDirectory={REPO}",
        "/etc/prediction-server/environment": str(tmp_path / "environment"),
        "User=prediction": "User=nobody",
        "Group=prediction": "Group=nogroup",
    })
    socket_unit = render(FOLDER / "prediction-server.socket", {"SocketUser=prediction": "SocketUser=nobody"})
    (tmp_path / "prediction-server.service").write_text(service)
    (tmp_path / "prediction-server.socket").write_text(socket_unit)
    result = subprocess.run([ANALYZE, "verify", "--man=no", "prediction-server.service", "prediction-server.socket"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # the socket systemd listens on is the one Nginx's upstream points at
    path = next(line.split("=", 1)[1] for line in socket_unit.splitlines() if line.startswith("ListenStream="))
    assert f"server unix:{path} " in (REPO / "deploy/nginx/prediction-server.conf").read_text()


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing")
def test_the_backup_units_pass_systemd_analyze_verify(tmp_path: Path):
    (tmp_path / "environment").write_text((FOLDER / "environment.example").read_text())
    service = render(FOLDER / "prediction-server-backup.service", {
        "/srv/prediction-server/.venv/bin/python": sys.executable,
        "WorkingDirectory=/srv/prediction-server": f"WorkingDirectory={REPO}",
        "/etc/prediction-server/environment": str(tmp_path / "environment"),
        "User=prediction": "User=nobody",
        "Group=prediction": "Group=nogroup",
    })
    (tmp_path / "prediction-server-backup.service").write_text(service)
    (tmp_path / "prediction-server-backup.timer").write_text((FOLDER / "prediction-server-backup.timer").read_text())
    result = subprocess.run([ANALYZE, "verify", "--man=no", "prediction-server-backup.service",
                             "prediction-server-backup.timer"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backup /var/backups/prediction-server --keep" in service


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def request(path: str, method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    connection = UnixHTTPConnection(path)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, url, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate missing")
def test_gunicorn_serves_on_the_socket_systemd_holds(artifact_root: Path, short_dir: Path, tmp_path: Path,
                                                     api_key: tuple[Path, str]):
    """Socket activation as the .socket unit does it: the first connection waits in the backlog while Gunicorn boots."""
    sock = str(short_dir / "gunicorn.sock")
    env = server_env(artifact_root, 8000, API_KEYS_FILE=str(api_key[0]))  # PORT is unused: systemd's socket wins
    settings = [f"--setenv={key}={value}" for key, value in env.items()]
    with open(tmp_path / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen([ACTIVATE, "--listen", sock, *settings, str(GUNICORN), "-c", "gunicorn.conf.py",
                                 "wsgi:application"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: Path(sock).exists(), 10, message="systemd's socket")
        status, _ = request(sock, "GET", "/healthz")  # accepted by the backlog before Gunicorn runs
        assert status == 200
        wait_until(lambda: request(sock, "GET", "/readyz")[0] == 200, 30, message="/readyz on the socket")
        status, body = request(sock, "POST", "/v1/models/diabetes:predict", {"instances": [[50, 1, 25.1, 90.0, 180.0,
                               100.0, 45.0, 4.0, 4.6, 90.0]]}, {"X-API-Key": api_key[1]})
        assert status == 200, body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    listening = [line for line in (tmp_path / "gunicorn.log").read_text().splitlines() if "Listening at" in line]
    assert listening and all(f"unix:{sock}" in line for line in listening)  # systemd's socket, not HOST:PORT

"""Real Nginx and Apache in front of real Gunicorn, configured from the files in deploy/.

Each proxy runs in the foreground as a child of the test, with a config rendered from the shipped
file into a temporary folder (loopback port, pid file and logs there), and is stopped by PID.
Rendering replaces exact strings of the shipped file and fails when one is missing, so the test
breaks when the file it claims to test changes shape.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, Server, start_server, stop_process

DEPLOY = REPO / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
APACHE_USER = "www-data"  # Apache refuses to serve as root; Debian's own account


def wait_until(condition: Callable[[], object], timeout: float, message: str = "condition") -> object:
    """Call ``condition`` until it returns something truthy and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} still false after {timeout} s")
        time.sleep(0.05)
    return value


def render(template: Path, replacements: dict[str, str]) -> str:
    """Return the file's text with each exact ``old`` replaced by ``new``; every ``old`` must occur."""
    text = template.read_text()
    for old, new in replacements.items():
        assert old in text, f"{template.relative_to(REPO)} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def assert_error_shape(response: requests.Response, status: int, code: str) -> dict:
    """The one error shape, served as JSON, with a request id."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    assert response.headers.get("X-Request-ID")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code and isinstance(body["error"]["details"], dict)
    return body["error"]


@dataclass
class Proxy:
    """Nginx or Apache started by a test in the foreground; stopped by PID."""

    proc: subprocess.Popen
    port: int
    workdir: Path
    conf: Path
    session: requests.Session = field(default_factory=requests.Session)
    gunicorn: Server | None = None  # the server behind it, when the test started one

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(self.base + path, **{"timeout": 30, **kwargs})

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.session.post(self.base + path, timeout=30, **kwargs)

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_listening(self, timeout: float = 15.0) -> None:
        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log('stderr.log')[-3000:]}"
                                   f"\n{self.log('error.log')[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, timeout, message=f"the proxy on port {self.port}")

    def wait_ready(self, path: str = "/readyz", timeout: float = 30.0) -> None:
        def ready() -> bool:
            try:
                return self.session.get(self.base + path, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        self.wait_listening()
        wait_until(ready, timeout, message=f"{path} through the proxy")

    def stop(self) -> None:
        stop_process(self.proc)
        self.session.close()


def _launch(argv: list[str], workdir: Path, port: int, conf: Path, env: dict[str, str] | None = None) -> Proxy:
    with open(workdir / "stderr.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env if env is not None else dict(os.environ))
    proxy = Proxy(proc, port, workdir, conf)
    try:
        proxy.wait_listening()
    except Exception:
        proxy.stop()
        raise
    return proxy


def nginx_site(upstream: str, port: int, **replacements: str) -> str:
    """deploy/nginx/prediction-server.conf listening on ``port`` and proxying to ``upstream`` (``unix:/x`` or ``host:port``)."""
    return render(DEPLOY / "nginx" / "prediction-server.conf", {
        "server unix:/run/prediction-server/gunicorn.sock max_fails=0;": f"server {upstream} max_fails=0;",
        "listen 80;": f"listen 127.0.0.1:{port};",
        **replacements,
    })


def start_nginx(workdir: Path, site: str, port: int) -> Proxy:
    """Run Nginx in the foreground with ``site`` in its http block; everything it writes stays in ``workdir``."""
    conf = write_nginx_conf(workdir, site)
    return _launch([NGINX, "-p", f"{workdir}/", "-e", str(workdir / "error.log"), "-c", str(conf)], workdir, port, conf)


def write_nginx_conf(workdir: Path, site: str) -> Path:
    """A main nginx.conf for the test: ``site`` in its http block, pid, logs and temporary files in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "site.conf").write_text(site)
    temp = {name: workdir / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
# root-safe: workers run as root so they can reach the test's private temporary folders
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {workdir}/site.conf;
}}
""")
    return conf


def reload_nginx(proxy: Proxy) -> None:
    """``nginx -s reload`` for the test's own Nginx (found through its pid file)."""
    subprocess.run([NGINX, "-p", f"{proxy.workdir}/", "-e", str(proxy.workdir / "error.log"), "-c", str(proxy.conf),
                    "-s", "reload"], check=True, capture_output=True, timeout=30)


APACHE_PROXY_MODULES = ("proxy", "proxy_http", "rewrite", "buffer")  # a2enmod in prediction-server.conf
APACHE_BASE_MODULES = ("mpm_event", "authz_core", "mime", "alias", "headers", "reqtimeout", "unique_id", "setenvif",
                       "env")


def start_apache(workdir: Path, site: str, port: int, modules: tuple[str, ...],
                 env: dict[str, str] | None = None) -> Proxy:
    """Run Apache in the foreground with ``site`` and the given modules; pid and logs in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    loads = "\n".join(f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so"
                      for name in (*APACHE_BASE_MODULES, *modules))
    (workdir / "site.conf").write_text(site.replace("${APACHE_LOG_DIR}", str(workdir)))
    conf = workdir / "apache2.conf"
    conf.write_text(f"""
{loads}
ServerRoot {workdir}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {workdir}/apache2.pid
Mutex file:{workdir} default
DefaultRuntimeDir {workdir}
ErrorLog {workdir}/error.log
LogLevel warn
User {APACHE_USER}
Group {APACHE_USER}
TypesConfig /etc/mime.types
StartServers 1
ServerLimit 2
ThreadsPerChild 25
MaxRequestWorkers 50
Include {workdir}/site.conf
""")
    return _launch([APACHE, "-f", str(conf), "-DFOREGROUND"], workdir, port, conf, env=env)


@contextmanager
def slow_clients(port: int, path: str, count: int = 2, headers: dict[str, str] | None = None) -> Iterator[None]:
    """Hold ``count`` connections that trickle a request: half send headers a line at a time
    (slowloris), half send complete headers, part of the body, and then the rest a byte at a time.
    Enough to pin every sync worker of a Gunicorn facing them directly."""
    stop = threading.Event()
    started = [threading.Event() for _ in range(count)]
    # a valid key, so the app reads the body rather than refusing at once
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())

    def trickle(index: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            if index % 2 == 0:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode())
                piece = b"X-Slow: 1\r\n"
            else:
                # 32 KiB at once: past the 16 KiB Apache reads before it decides whether to stream
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
                             f"Content-Length: 100000\r\n\r\n{{".encode() + b" " * 32768)
                piece = b" "
            started[index].set()
            while not stop.wait(0.2):
                try:
                    sock.sendall(piece)
                except OSError:
                    return

    threads = [threading.Thread(target=trickle, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        for event in started:
            assert event.wait(10), "a slow client could not connect"
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def public_dir(prefix: str) -> Path:
    """A fresh folder the proxy's unprivileged workers can read (pytest's own are private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def api_key() -> Iterator[tuple[Path, str]]:
    """A keys file with one predict/read key, and the key: requests through a proxy are never "local"."""
    from service.security.keys import create_key

    folder = public_dir("ps-keys-")
    keys_file = folder / "keys.json"
    key = create_key(keys_file, "deploy-tests", ["predict", "read"])
    keys_file.chmod(0o644)
    yield keys_file, key
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tcp_gunicorn(demo_root: Path, tmp_path_factory: pytest.TempPathFactory, api_key: tuple[Path, str]) -> Iterator[Server]:
    """One Gunicorn on a loopback TCP port over the demo models, shared by the read-only proxy tests.

    It has API keys (a request through a proxy is never local) and believes forwarded headers from
    127.0.0.1, where the proxies under test run.
    """
    server = start_server(demo_root, tmp_path_factory.mktemp("gunicorn"), API_KEYS_FILE=str(api_key[0]),
                          FORWARDED_ALLOW_IPS="127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path, for Unix sockets (their paths are limited to 107 bytes)."""
    path = public_dir("ps-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., Proxy]]:
    """Start proxies for one test; every one is stopped at the end, whatever happened."""
    proxies: list[Proxy] = []

    def started(proxy: Proxy) -> Proxy:
        proxies.append(proxy)
        return proxy

    yield started
    for proxy in reversed(proxies):
        proxy.stop()

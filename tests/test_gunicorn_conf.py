"""gunicorn.conf.py's start-up checks, run against fake listeners (the tests may only bind loopback)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import SCRUBBED_ENV

REPO = Path(__file__).resolve().parents[1]


def load_conf(monkeypatch, **env: str):
    for name in SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", REPO / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def fake_server(host: str):
    warnings = []

    class Log:
        def warning(self, message, **_):
            warnings.append(message)

    class Listener:
        class sock:  # noqa: N801
            @staticmethod
            def getsockname():
                return (host, 8000)

        def __str__(self):
            return f"{host}:8000"

    return type("Server", (), {"LISTENERS": [Listener()], "log": Log()})(), warnings


@pytest.mark.parametrize(("host", "env", "warned"), [
    ("10.1.2.3", {}, True),                                      # public, sync, no proxy: warn, naming the fix
    ("10.1.2.3", {"FORWARDED_ALLOW_IPS": "10.1.2.1"}, False),    # a proxy is declared
    ("10.1.2.3", {"THREADS": "4"}, False),                       # gthread workers
    ("127.0.0.1", {}, False),                                    # loopback
])
def test_sync_workers_on_a_public_address_without_a_proxy_are_warned_about(monkeypatch, host, env, warned):
    conf = load_conf(monkeypatch, **env)
    server, warnings = fake_server(host)
    conf._warn_unbuffered_public_sync(server)
    assert bool(warnings) == warned
    if warned:
        assert "FORWARDED_ALLOW_IPS" in warnings[0] and "deploy/" in warnings[0]


def test_recycling_follows_the_settings(monkeypatch):
    conf = load_conf(monkeypatch, WORKER_MAX_REQUESTS="1000")
    assert (conf.max_requests, conf.max_requests_jitter) == (1000, 200)
    assert load_conf(monkeypatch).max_requests == 100_000

"""gunicorn.conf.py's start-up checks, run against fake listeners (the tests may only bind loopback)."""

from __future__ import annotations

import pytest

from tests.builders import fake_gunicorn_server, load_gunicorn_conf


@pytest.mark.parametrize(("host", "env", "warned"), [
    ("10.1.2.3", {}, True),                                      # public, sync, no proxy: warn, naming the fix
    ("10.1.2.3", {"FORWARDED_ALLOW_IPS": "10.1.2.1"}, False),    # a proxy is declared
    ("10.1.2.3", {"THREADS": "4"}, False),                       # gthread workers
    ("127.0.0.1", {}, False),                                    # loopback
])
def test_sync_workers_on_a_public_address_without_a_proxy_are_warned_about(monkeypatch, host, env, warned):
    conf = load_gunicorn_conf(monkeypatch, **env)
    server, lines = fake_gunicorn_server(host)
    conf._warn_unbuffered_public_sync(server)
    assert bool(lines) == warned
    if warned:
        level, message = lines[0]
        assert level == "warning" and "FORWARDED_ALLOW_IPS" in message and "deploy/" in message


def test_recycling_follows_the_settings(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, WORKER_MAX_REQUESTS="1000")
    assert (conf.max_requests, conf.max_requests_jitter) == (1000, 200)
    assert load_gunicorn_conf(monkeypatch).max_requests == 100_000

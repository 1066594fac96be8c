"""gunicorn.conf.py's start-up checks, run against fake listeners (the tests may only bind loopback)."""

from __future__ import annotations

import pytest

from service.buffering import BufferingWorker
from tests.builders import fake_gunicorn_server, load_gunicorn_conf


@pytest.mark.parametrize(("host", "env", "forced", "warned"), [
    ("10.1.2.3", {}, None, False),                                   # the default: requests are buffered
    ("10.1.2.3", {}, "sync", True),                                  # public, sync forced, no proxy: warn
    ("10.1.2.3", {}, "gthread", True),                               # threads read requests too
    ("10.1.2.3", {"FORWARDED_ALLOW_IPS": "10.1.2.1"}, None, False),  # a proxy is declared (sync by default)
    ("127.0.0.1", {}, "sync", False),                                # loopback
])
def test_unbuffered_workers_on_a_public_address_without_a_proxy_are_warned_about(monkeypatch, host, env, forced,
                                                                                    warned):
    conf = load_gunicorn_conf(monkeypatch, **env)
    server, lines = fake_gunicorn_server(host, forced or conf.worker_class)
    conf._warn_unbuffered_public_sync(server)
    assert bool(lines) == warned
    if warned:
        level, message = lines[0]
        assert level == "warning" and "FORWARDED_ALLOW_IPS" in message and "deploy/" in message


def test_without_a_declared_proxy_the_worker_buffers_requests_within_the_apps_limits(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, MAX_REQUEST_BYTES="2048", REQUEST_READ_TIMEOUT="7", THREADS="3")
    assert issubclass(conf.worker_class, BufferingWorker) and conf.threads == 3
    assert (conf.worker_class.max_body, conf.worker_class.read_timeout) == (2048, 7.0)


@pytest.mark.parametrize(("threads", "expected"), [("1", "sync"), ("4", "gthread")])
def test_behind_a_declared_proxy_the_worker_is_sync_or_gthread(monkeypatch, threads, expected):
    """The proxy buffers every request; sync costs the least CPU per prediction (README, Run it in production)."""
    conf = load_gunicorn_conf(monkeypatch, FORWARDED_ALLOW_IPS="10.1.2.1", THREADS=threads)
    assert conf.worker_class == expected


def test_recycling_follows_the_settings(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, WORKER_MAX_REQUESTS="1000")
    assert (conf.max_requests, conf.max_requests_jitter) == (1000, 200)
    assert load_gunicorn_conf(monkeypatch).max_requests == 100_000

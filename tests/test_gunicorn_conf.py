"""gunicorn.conf.py's start-up checks, run against fake listeners (the tests may only bind loopback), and the
master's start before its first fork."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from service.buffering import BufferingWorker
from tests.builders import fake_gunicorn_server, load_gunicorn_conf
from tests.conftest import REPO, SCRUBBED_ENV


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
    """The proxy buffers every request; sync costs the least CPU per prediction (docs/explanation/production.md)."""
    conf = load_gunicorn_conf(monkeypatch, FORWARDED_ALLOW_IPS="10.1.2.1", THREADS=threads)
    assert conf.worker_class == expected


def test_recycling_follows_the_settings(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, WORKER_MAX_REQUESTS="1000")
    assert (conf.max_requests, conf.max_requests_jitter) == (1000, 200)
    assert load_gunicorn_conf(monkeypatch).max_requests == 100_000


#: Runs in a fresh interpreter: the master's side of the start (the config file, then on_starting),
#: reporting whether onnxruntime was imported and how many threads the master holds before its first fork.
MASTER_START = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("conf", "gunicorn.conf.py")
conf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(conf)
class Log:
    def info(self, *args, **kwargs):
        pass
conf.on_starting(type("Server", (), {"log": Log()})())
print(json.dumps({"onnxruntime": "onnxruntime" in sys.modules, "threads": len(os.listdir("/proc/self/task"))}))
"""


@pytest.mark.parametrize(("telemetry", "preimported"), [
    (None, True),   # the default: telemetry off, onnxruntime shared by every worker
    ("0", False),   # an operator turned ONNX Runtime's telemetry on: each worker imports it after fork
])
def test_the_master_forks_its_workers_from_a_single_thread(telemetry, preimported):
    env = {name: value for name, value in os.environ.items() if name not in SCRUBBED_ENV}
    if telemetry is not None:
        env["ORT_DISABLE_TELEMETRY"] = telemetry
    out = subprocess.run([sys.executable, "-c", MASTER_START], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    # A thread alive in the master at fork is missing from every worker, and whatever owns it
    # breaks when the worker exits (ONNX Runtime's telemetry uploader aborted every worker).
    assert json.loads(out.splitlines()[-1]) == {"onnxruntime": preimported, "threads": 1}


@pytest.mark.parametrize(("value", "off"), [("1", True), ("TRUE", True), ("yes", True), ("On", True),
                                             ("0", False), ("false", False), ("", False)])
def test_an_operators_telemetry_setting_is_kept_and_read_as_onnxruntime_reads_it(monkeypatch, value, off):
    conf = load_gunicorn_conf(monkeypatch, ORT_DISABLE_TELEMETRY=value)
    assert os.environ["ORT_DISABLE_TELEMETRY"] == value and conf._ort_telemetry_off() is off

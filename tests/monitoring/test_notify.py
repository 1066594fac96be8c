import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.monitoring.alerts import AlertManager, evaluate, parse_rule
from service.monitoring.notify import Notification, Notifier, backoff_delay

FIRING = Notification("firing", "breast-cancer", 2, "error_rate", "too many errors", 0.5, 0.2, 1_700_000_000.0)


class Webhook:
    """A real HTTP server on loopback that fails the first ``failures`` POSTs with 500."""

    def __init__(self, failures: int = 0, status: int = 500, hold: threading.Event | None = None):
        self.failures, self.status, self.hold = failures, status, hold
        self.arrivals: list[float] = []
        self.bodies: list[dict] = []
        self.received = threading.Event()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.arrivals.append(time.monotonic())
                webhook.received.set()
                if webhook.hold is not None:
                    webhook.hold.wait(5)
                if len(webhook.arrivals) <= webhook.failures:
                    self.send_response(webhook.status)
                else:
                    webhook.bodies.append(json.loads(body))
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Loopback only: no proxy from the environment may carry the webhook elsewhere."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_log_line_for_each_status(caplog):
    caplog.set_level(logging.INFO, logger="service.monitoring.notify")
    notifier = Notifier(None)
    for status in ("firing", "warn", "resolved"):
        notifier.send(Notification(status, "m", 1, "error_rate", "d", 0.5, 0.2, 0.0))
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.WARNING, logging.INFO]
    first = caplog.records[0]
    assert (first.model, first.version, first.rule, first.value, first.threshold, first.alert_status) == (
        "m", 1, "error_rate", 0.5, 0.2, "firing")


def test_backoff_doubles_is_capped_and_jittered():
    assert [backoff_delay(i, 0.5, 4.0, lambda: 1.0) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [backoff_delay(i, 0.5, 4.0, lambda: 0.0) for i in range(4)] == [0.25, 0.5, 1.0, 2.0]
    delays = [backoff_delay(i, 0.5, 4.0) for i in range(5)]
    assert all(low <= d <= high for d, low, high in zip(delays, [0.25, 0.5, 1, 2, 2], [0.5, 1, 2, 4, 4], strict=True))


def test_webhook_retried_with_growing_delays_until_it_succeeds():
    with Webhook(failures=3) as hook:
        notifier = Notifier(hook.url, server="replica-1", base_delay=0.05, rand=lambda: 1.0)
        notifier.send(FIRING)
        assert notifier.flush(5)
        notifier.close()
    assert len(hook.arrivals) == 4
    gaps = [b - a for a, b in zip(hook.arrivals, hook.arrivals[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2
    assert gaps[0] < gaps[1] < gaps[2]
    assert notifier.stats() == {"sent": 1, "failed": 0, "dropped": 0, "attempt_failures": 3, "queued": 0}
    (payload,) = hook.bodies
    assert payload == {"status": "firing", "model": "breast-cancer", "version": 2, "rule": "error_rate",
                       "description": "too many errors", "value": 0.5, "threshold": 0.2, "since": 1_700_000_000.0,
                       "since_iso": "2023-11-14T22:13:20Z", "server": "replica-1"}


def test_webhook_gives_up_after_the_last_attempt(caplog):
    with Webhook(failures=100) as hook:
        notifier = Notifier(hook.url, attempts=3, base_delay=0.01)
        notifier.send(FIRING)
        assert notifier.flush(5)
        notifier.close()
    assert len(hook.arrivals) == 3
    assert (notifier.failed, notifier.attempt_failures) == (1, 3)
    assert "giving up" in caplog.text


def test_client_errors_are_not_retried():
    with Webhook(failures=100, status=400) as hook:
        notifier = Notifier(hook.url, base_delay=0.01)
        notifier.send(FIRING)
        assert notifier.flush(5)
        notifier.close()
    assert len(hook.arrivals) == 1 and notifier.failed == 1


def test_webhook_down_is_logged_and_counted_and_evaluation_goes_on(tmp_path, caplog):
    notifier = Notifier(closed_port_url(), attempts=2, base_delay=0.01, timeout=1)
    rule = parse_rule({"name": "errors", "description": "d", "metric": "traffic.error_rate", "op": ">", "alert": 0.2,
                       "samples": "traffic.requests", "min_samples": 1})
    manager = AlertManager(tmp_path / "a.db", [rule], notifier)
    started = time.monotonic()
    for t, rate in enumerate([0.5, 0.0, 0.5]):
        manager.apply("m", 1, evaluate([rule], "m", 1, {"traffic": {"requests": 10, "error_rate": rate}}), float(t))
    assert time.monotonic() - started < 0.5  # delivery happens elsewhere
    assert manager.active()[0]["state"] == "firing"
    assert notifier.flush(5)
    notifier.close()
    assert notifier.stats()["failed"] == 3 and notifier.stats()["sent"] == 0
    assert "alert webhook delivery failed" in caplog.text
    reasons = [r.reason for r in caplog.records if r.getMessage().startswith("alert webhook delivery failed")]
    assert len(reasons) == 3 and all("refused" in reason for reason in reasons)


def test_full_queue_drops_the_oldest():
    hold = threading.Event()
    with Webhook(hold=hold) as hook:
        notifier = Notifier(hook.url, queue_size=2)
        notifier.send(Notification("firing", "m", 1, "r0", "d", 0, 0, 0.0))
        assert hook.received.wait(5)  # the first is in flight; the rest queue behind it
        for i in range(1, 5):
            notifier.send(Notification("firing", "m", 1, f"r{i}", "d", 0, 0, 0.0))
        assert notifier.dropped == 2
        hold.set()
        assert notifier.flush(5)
        notifier.close()
    assert [b["rule"] for b in hook.bodies] == ["r0", "r3", "r4"]


def test_only_http_urls():
    with pytest.raises(ValueError, match="http"):
        Notifier("file:///etc/passwd")


class Redirecting:
    """A receiver that answers every POST with a 302 to another path and counts any GET that follows."""

    def __init__(self):
        self.gets: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(302)
                self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                receiver.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_redirect_is_not_followed_and_not_counted_as_delivered(caplog):
    receiver = Redirecting()
    try:
        notifier = Notifier(receiver.url, attempts=3, base_delay=0.01)
        notifier.send(FIRING)
        assert notifier.flush(10)
        assert receiver.gets == []
        assert notifier.stats()["sent"] == 0 and notifier.stats()["failed"] == 1
        assert notifier.stats()["attempt_failures"] == 1  # a 3xx is not retried
        reasons = [getattr(r, "reason", "") for r in caplog.records]
        assert any("redirects are not followed" in r and "/elsewhere" in r for r in reasons)
    finally:
        receiver.close()


def test_a_trickling_receiver_cannot_hold_an_attempt_past_its_deadline():
    """Each byte arrives within the socket timeout, so only the total deadline ends the attempt."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def trickle():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    notifier = Notifier(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", timeout=1.0, deadline=0.8, attempts=1)
    started = time.monotonic()
    notifier.send(FIRING)
    try:
        assert notifier.flush(10)
        assert time.monotonic() - started < 5  # the trickle alone would take 20 s
        assert notifier.stats()["failed"] == 1 and notifier.stats()["sent"] == 0
    finally:
        stop.set()
        listener.close()
        thread.join(5)

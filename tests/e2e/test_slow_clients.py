"""Gunicorn facing clients directly, as `make serve` starts it: slow clients cannot stall the server.

With no proxy declared the workers buffer each request before a thread serves it
(service.buffering); these tests hold connections that trickle their requests in, as a
slowloris does, and check what everyone else gets meanwhile.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from tests.builders import logged_ids, wait_until
from tests.sqlite import connected

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
PREDICT = "/v1/models/diabetes:predict"
TRICKLING = 64  # of each kind: 2 workers x 4 threads was enough to stall gthread, 2 to stall sync
PROBE_SECONDS = 5.0


@contextmanager
def trickling(port: int, count: int, body: bool) -> Iterator[list[int]]:
    """Hold ``count`` connections sending one byte a second: of the headers (``body`` False), or of a
    declared body after complete headers. Yields a list that counts the sends that failed."""
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if body:
        head += "Content-Length: 100000\r\n\r\n{"
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    for sock in sockets:
        sock.sendall(head.encode())
    failures = [0]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in sockets:
                try:
                    sock.sendall(b" " if body else b"X")
                except OSError:
                    failures[0] += 1

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(timeout=5)
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_trickling_clients_leave_health_probes_and_predictions_answered(artifact_root, server_factory, threads):
    """THREADS=1 (the default): the main loop serves each whole request itself; THREADS=4: a pool does."""
    server = server_factory(artifact_root, THREADS=threads)  # 2 workers, no FORWARDED_ALLOW_IPS
    probes, answered = [], []
    with trickling(server.port, TRICKLING, body=False) as header_failures, \
            trickling(server.port, TRICKLING, body=True) as body_failures:
        time.sleep(1.0)  # every slow connection accepted and sending
        deadline = time.monotonic() + PROBE_SECONDS
        while time.monotonic() < deadline:
            started = time.monotonic()
            probe = requests.get(server.base + "/healthz", timeout=5)
            probes.append((probe.status_code, time.monotonic() - started))
            predicted = requests.post(server.base + PREDICT, json={"instances": [ROW]}, timeout=5)
            assert predicted.status_code == 200, predicted.text
            answered.append((predicted.headers["X-Request-ID"], predicted.json()["ids"]))
            time.sleep(0.2)
        assert header_failures == [0] and body_failures == [0], "the slow clients were cut off, not served around"
    assert len(probes) >= 10 and {status for status, _ in probes} == {200}
    assert max(seconds for _, seconds in probes) < 1.0, sorted(seconds for _, seconds in probes)[-5:]
    assert "Using worker: BufferingWorker" in server.log_path.read_text()

    # every prediction answered meanwhile is recorded by the workers' recorder threads
    database = artifact_root.parent / f"db-{server.port}" / "predictions.db"

    def missing() -> list[str]:
        with connected(database) as db:
            requests_seen = {row[0] for row in db.execute("SELECT request_id FROM requests WHERE status = 200")}
            predictions_seen = set(logged_ids(db))
        return [rid for rid, ids in answered if rid not in requests_seen or not set(ids) <= predictions_seen]

    wait_until(lambda: not missing(), timeout=15, message="every answered prediction recorded")


def test_a_request_slower_than_request_read_timeout_is_disconnected(artifact_root, server_factory):
    server = server_factory(artifact_root, REQUEST_READ_TIMEOUT="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n{{".encode())
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, nothing answered
        assert time.monotonic() - started < 5
    assert requests.get(server.base + "/healthz", timeout=5).status_code == 200


def exchange(port: int, *pieces: bytes, pause: float = 0.1) -> bytes:
    """Send ``pieces`` with a pause between them on one connection; return everything answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_pipelined_chunked_and_expect_continue_requests_are_answered_once_each(demo_server):
    body = b'{"instances": [[50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]]}'
    post = f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
    # two requests in one packet, the second's body split: both answered, in order
    answer = exchange(demo_server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + post
                      + b"Content-Length: %d\r\n\r\n" % len(body) + body[:10], body[10:])
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b'"predictions"' in answer.split(b"HTTP/1.1 200 OK")[2]
    # a chunked body arriving chunk by chunk
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:20], body[20:])) + b"0\r\n\r\n"
    answer = exchange(demo_server.port, post + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                      chunked[:30], chunked[30:])
    assert answer.startswith(b"HTTP/1.1 200 OK") and b'"predictions"' in answer
    # the client waits for 100 Continue before its body: it comes once, then the answer
    with socket.create_connection(("127.0.0.1", demo_server.port), timeout=5) as sock:
        sock.sendall(post + b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"100 Continue" not in answer


def test_a_declared_body_over_the_limit_that_never_comes_holds_a_thread_for_seconds_only(demo_server):
    """The app reads on a little before its 413 (so a proxy sees the answer, not a reset); a client
    that sends nothing more is given up after a few seconds instead of holding the thread."""
    with socket.create_connection(("127.0.0.1", demo_server.port), timeout=20) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {16 * 1024 * 1024 + 1}\r\n\r\n{{".encode())
        started = time.monotonic()
        answer = b""
        while b"payload_too_large" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b'"payload_too_large"' in answer
    assert time.monotonic() - started < 10

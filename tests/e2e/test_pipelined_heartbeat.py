"""THREADS=1 buffering worker: a keep-alive client pipelining requests must not cost the worker its heartbeat."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from service.models import registry
from service.models.packaging import package_model
from tests.faulty_models import SlowRegressor

pytestmark = pytest.mark.e2e

PIPELINED = 6  # requests of 1 s each, sent at once on one connection: 6 s of work
TIMEOUT = 3  # WORKER_TIMEOUT: longer than any one request, shorter than the chain


@pytest.fixture
def slow_root(tmp_path):
    root = tmp_path / "artifacts"
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.3]})
    y = pd.Series([1.5, 2.1, 3.2, 4.3])
    manifest = package_model(SlowRegressor(1.0).fit(X.to_numpy(), y), "slow", root, X, y)
    registry.record_packaged(root, manifest, actor="test")
    return root


def test_pipelined_requests_each_shorter_than_the_timeout_are_all_answered(slow_root, server_factory):
    server = server_factory(slow_root, WEB_CONCURRENCY="1", THREADS="1", WORKER_TIMEOUT=str(TIMEOUT))
    (worker,) = server.worker_pids()
    body = b'{"instances": [[1.0, 2.0]]}'
    one = (
        b"POST /v1/models/slow:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(one * PIPELINED)
        while received.count(b"HTTP/1.1 200") < PIPELINED:
            piece = sock.recv(65536)
            if not piece:
                break  # the worker is gone
            received += piece
    answered = received.count(b"HTTP/1.1 200")
    timed_out = [r for r in server.log_records() if "WORKER TIMEOUT" in str(r.get("message", ""))]
    assert answered == PIPELINED and not timed_out, (
        f"{answered} of {PIPELINED} pipelined requests answered; worker {worker} killed: {timed_out}"
    )

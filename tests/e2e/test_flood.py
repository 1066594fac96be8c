"""A flood of full batches, as fast as the clients can send them: every answered prediction is recorded.

Real Gunicorn with the shipped defaults (2 workers) and no rate limit; 16 clients send
10,000-row diabetes batches (records, ~1.7 MB each) back to back. Afterwards every answered batch is one record in the
log with all its rows, its first and last ids are known to feedback, nothing was dropped and no
worker aborted.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import requests

from tests.builders import wait_until
from tests.sqlite import connected

pytestmark = pytest.mark.e2e

RECORD = dict(zip(("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"),
                  (50, 1, 25.0, 90.0, 150, 100.0, 50.0, 3.0, 4.5, 90), strict=True))
ROWS = 10_000
CLIENTS = 16
SECONDS = 10.0


def test_a_flood_of_full_batches_loses_no_answered_prediction(artifact_root, server_factory):
    server = server_factory(artifact_root)
    body = orjson.dumps({"instances": [RECORD] * ROWS})  # records: ~1.7 MB a body, 16 arriving at once
    answered: list[tuple[str, str, str]] = []  # request id, first id, last id
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            reply = session.post(server.base + "/v1/models/diabetes:predict", data=body,
                                 headers={"Content-Type": "application/json"}, timeout=60)
            assert reply.status_code == 200, reply.text[:300]
            ids = reply.json()["ids"]
            assert len(ids) == ROWS
            with lock:
                answered.append((reply.headers["X-Request-ID"], ids[0], ids[-1]))

    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client) for _ in range(CLIENTS)]:
            future.result()
    assert len(answered) >= 20, "the flood should have been answered"
    database = artifact_root.parent / f"db-{server.port}" / "predictions.db"

    def recorded() -> dict[str, int]:
        with connected(database, timeout=10) as db:
            return dict(db.execute("SELECT request_id, rows FROM prediction_batches WHERE model = 'diabetes'"))

    wanted = {rid for rid, _, _ in answered}
    assert wait_until(lambda: wanted <= set(recorded()), timeout=120), \
        f"{len(wanted - set(recorded()))} of {len(wanted)} answered batches are not in the log"
    assert {rid: rows for rid, rows in recorded().items() if rid in wanted} == dict.fromkeys(wanted, ROWS)
    ends = [pid for _, first, last in answered for pid in (first, last)]
    reply = server.post("/v1/models/diabetes/feedback", json={"feedback": [{"id": i, "label": 1.0} for i in ends]})
    assert reply.status_code == 200 and reply.json()["unknown"] == [], reply.text[:500]
    dropped = [line for line in server.get("/metrics").text.splitlines()
               if line.startswith("sklearn_server_records_dropped_total{") and not line.endswith(" 0.0")]
    assert dropped == []
    aborted = [r for r in server.log_records() if "SIGABRT" in r.get("message", "")]
    assert aborted == []


def test_many_large_bodies_at_once_are_read_while_a_thread_predicts(demo_root, server_factory):
    """16 clients each send a 7.5 MB body at once: the main loop must read them promptly although
    predicting (on a thread, or in the loop itself with THREADS=1) takes most of its time, and the
    time it spends predicting must not count against their REQUEST_READ_TIMEOUT, or they are cut."""
    from sklearn.datasets import load_breast_cancer

    server = server_factory(demo_root, REQUEST_READ_TIMEOUT="5", PREDICTION_LOG_SAMPLE="0")
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    body = orjson.dumps({"instances": frame.sample(ROWS, replace=True, random_state=0).to_dict(orient="records")})
    outcomes: list[object] = []

    def client() -> None:
        for _ in range(2):
            try:
                reply = requests.post(server.base + "/v1/models/breast-cancer:predict", data=body,
                                      headers={"Content-Type": "application/json"}, timeout=60)
                outcomes.append(reply.status_code)
            except requests.RequestException as exc:
                outcomes.append(type(exc).__name__)

    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client) for _ in range(CLIENTS)]:
            future.result()
    assert outcomes == [200] * (2 * CLIENTS), sorted(map(str, outcomes))

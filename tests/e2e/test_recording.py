"""Recording runs off the request's path, yet a graceful stop under load loses no answered request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.builders import logged_ids
from tests.conftest import start_server
from tests.sqlite import connected

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.0, 90.0, 150, 100.0, 50.0, 3.0, 4.5, 90]
CLIENTS = 4
MAX_REQUESTS_PER_CLIENT = 400


def test_sigterm_under_load_keeps_every_answered_request_in_the_log(artifact_root, tmp_path):
    server = start_server(artifact_root, tmp_path)
    answered: list[tuple[str, list[str]]] = []
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        session = requests.Session()
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            try:
                response = session.post(server.base + "/v1/models/diabetes:predict",
                                        json={"instances": [ROW, ROW]}, timeout=10)
            except requests.RequestException:
                return  # the server is going away: that request was never answered
            if response.status_code == 200:
                with lock:
                    answered.append((response.headers["X-Request-ID"], response.json()["ids"]))

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(client) for _ in range(CLIENTS)]
            deadline = time.monotonic() + 30
            while len(answered) < 200 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.proc.terminate()  # graceful: workers finish their request, then run worker_exit
            server.proc.wait(timeout=40)
            stop.set()
            for future in futures:
                future.result()
    finally:
        server.stop()
    assert len(answered) >= 200, "the load should have been answered before the stop"
    database = artifact_root.parent / f"db-{server.port}" / "predictions.db"
    with connected(database) as db:
        request_ids = {row[0] for row in db.execute("SELECT request_id FROM requests WHERE status = 200")}
        prediction_ids = set(logged_ids(db))
    missing_requests = [rid for rid, _ in answered if rid not in request_ids]
    missing_predictions = [pid for _, ids in answered for pid in ids if pid not in prediction_ids]
    assert missing_requests == [] and missing_predictions == []

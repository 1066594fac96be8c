"""End to end: two 2 MB CSV header bombs at once cannot take a two-worker Gunicorn away from its probes.

Before bodies were sized up by their columns, one such header held a sync worker past
``WORKER_TIMEOUT`` (pandas renaming the repeated name in quadratic time), so two of them left
no worker for ``/healthz``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.protocols.test_body_width import MB2, csv_header

pytestmark = pytest.mark.e2e

PROBE_EVERY = 0.2
PROBE_BOUND = 1.0  # seconds a probe may take; a free worker answers in milliseconds
BOMB_BOUND = 5.0  # seconds to each 4xx, generous for a shared machine; the bug held a worker for minutes


def probe_until(base: str, stop: threading.Event, seen: list[tuple[int | None, float]]) -> None:
    """GET /healthz every PROBE_EVERY seconds until ``stop``; keep (status or None, seconds) of each."""
    with requests.Session() as session:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status: int | None = session.get(base + "/healthz", timeout=PROBE_BOUND * 5).status_code
            except requests.RequestException:
                status = None
            seen.append((status, time.perf_counter() - started))
            stop.wait(PROBE_EVERY)


def bomb(base: str, body: bytes) -> tuple[int | None, str | None, float]:
    started = time.perf_counter()
    try:
        response = requests.post(base + "/invocations", data=body, headers={"Content-Type": "text/csv"},
                                 timeout=BOMB_BOUND * 6)
    except requests.RequestException:
        return None, None, time.perf_counter() - started
    return response.status_code, response.json().get("code"), time.perf_counter() - started


def test_two_parallel_header_bombs_are_refused_fast_and_probes_keep_answering(demo_root, server_factory):
    server = server_factory(demo_root, WEB_CONCURRENCY="2", DEFAULT_MODEL="breast-cancer")
    assert len(server.worker_pids()) == 2
    body = csv_header(MB2, same=True)
    probes: list[tuple[int | None, float]] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe_until, args=(server.base, stop, probes))
    prober.start()
    try:
        time.sleep(3 * PROBE_EVERY)
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(bomb, [server.base] * 2, [body] * 2))
        time.sleep(3 * PROBE_EVERY)
    finally:
        stop.set()
        prober.join(timeout=PROBE_BOUND * 10)
    assert [(status, code) for status, code, _ in answers] == [(422, "too_many_elements")] * 2, answers
    assert max(seconds for _, _, seconds in answers) < BOMB_BOUND, answers
    assert len(probes) >= 5, probes
    assert all(status == 200 and seconds < PROBE_BOUND for status, seconds in probes), probes
    assert len(server.worker_pids()) == 2  # neither worker was killed for its timeout

"""End to end: /metrics on a real two-worker Gunicorn adds up every worker's traffic, and survives a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer

from tests.monitoring.test_metrics import promtool

pytestmark = pytest.mark.e2e

PREDICT_ROUTE = "/v1/models/<model_name:name>:predict"
BATCHES = (1, 3, 7, 2, 5, 1, 4, 6)


def records(n: int, offset: int) -> list[dict]:
    data = load_breast_cancer(as_frame=True).data
    return json.loads(data.iloc[offset:offset + n].to_json(orient="records"))


#: A connection per request: a kept-alive one stays with the worker that accepted it.
CLOSE = {"Connection": "close"}


class Traffic:
    """What the test sent, to compare with what the server counted."""

    def __init__(self) -> None:
        self.ok = self.invalid = self.unknown = self.rows = 0

    def send(self, server, rounds: int) -> None:
        def ok(i: int) -> int:
            rows = BATCHES[i % len(BATCHES)]
            r = server.post("/v1/models/breast-cancer:predict", json={"instances": records(rows, i)}, headers=CLOSE)
            assert r.status_code == 200, r.text
            return rows

        def invalid(_: int) -> None:
            r = server.post("/v1/models/diabetes:predict", json={"instances": [{"age": "old"}]}, headers=CLOSE)
            assert r.status_code == 422, r.text

        def unknown(i: int) -> None:
            r = server.post(f"/v1/models/no-such-model-{i}:predict", json={"instances": [[1]]}, headers=CLOSE)
            assert r.status_code == 404, r.text

        with ThreadPoolExecutor(4) as pool:  # concurrent, so both workers take requests
            rows = list(pool.map(ok, range(rounds)))
            list(pool.map(invalid, range(rounds // 2)))
            list(pool.map(unknown, range(3)))
        self.ok += rounds
        self.rows += sum(rows)
        self.invalid += rounds // 2
        self.unknown += 3


class Scraper:
    def __init__(self, server) -> None:
        self.server = server
        self.scrapes = 0
        self.text = ""

    def scrape(self) -> dict:
        r = self.server.get("/metrics")
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        self.scrapes += 1
        self.text = r.text
        samples: dict = {}
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in samples, f"duplicate series {key}"
                samples[key] = sample.value
        return samples

    def until(self, expected: dict, timeout: float = 15.0) -> dict:
        """Scrape until the counts match (observers run just after each response is sent)."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape()
            got = {k: samples.get(k) for k in expected}
            if got == expected:
                return samples
            if time.monotonic() > deadline:
                assert got == expected
            time.sleep(0.2)


def key(name: str, **labels: str) -> tuple:
    return (name, tuple(sorted(labels.items())))


def expected_counts(t: Traffic) -> dict:
    return {
        key("sklearn_server_http_requests_total", route=PREDICT_ROUTE, method="POST", status="200"): float(t.ok),
        key("sklearn_server_http_requests_total", route=PREDICT_ROUTE, method="POST", status="422"): float(t.invalid),
        key("sklearn_server_http_requests_total", route=PREDICT_ROUTE, method="POST", status="404"): float(t.unknown),
        key("sklearn_server_http_request_duration_seconds_count", route=PREDICT_ROUTE, method="POST"):
            float(t.ok + t.invalid + t.unknown),
        key("sklearn_server_prediction_requests_total", model="breast-cancer", version="1", outcome="ok"): float(t.ok),
        key("sklearn_server_predictions_total", model="breast-cancer", version="1"): float(t.rows),
        key("sklearn_server_prediction_batch_rows_count", model="breast-cancer"): float(t.ok),
        key("sklearn_server_prediction_batch_rows_sum", model="breast-cancer"): float(t.rows),
        key("sklearn_server_validation_failures_total", model="diabetes", code="validation_failed"): float(t.invalid),
    }


def check_invariants(samples: dict, scraper: Scraper) -> None:
    invalid = sum(v for (name, labels), v in samples.items()
                  if name == "sklearn_server_prediction_requests_total" and dict(labels).get("model") == "diabetes"
                  and dict(labels)["outcome"] == "invalid")
    assert invalid == samples[key("sklearn_server_validation_failures_total", model="diabetes", code="validation_failed")]
    # the scrape being answered is the one request in progress; earlier scrapes are all counted
    assert samples[key("sklearn_server_http_requests_in_progress")] == 1
    assert samples[key("sklearn_server_http_requests_total", route="/metrics", method="GET", status="200")] \
        == scraper.scrapes - 1
    info = [dict(labels) for (name, labels), v in samples.items() if name == "sklearn_server_model_info" and v == 1]
    assert sorted((i["model"], i["version"]) for i in info) == [("breast-cancer", "1"), ("diabetes", "1")]
    assert all(len(i["sha256"]) == 64 and i["sklearn_version"] for i in info)
    assert "no-such-model" not in scraper.text
    assert not any("pid" in dict(labels) for name, labels in samples if not name.startswith("sklearn_server_worker_"))
    # live workers (a replacement may still be booting) report their own CPU, memory and open files by pid
    live = set(scraper.server.worker_pids())
    for name in ("sklearn_server_worker_cpu_seconds", "sklearn_server_worker_resident_memory_bytes",
                 "sklearn_server_worker_open_fds"):
        assert set() < {int(dict(labels)["pid"]) for n, labels in samples if n == name} <= live, name


def worker_pids_reported(samples: dict) -> set[int]:
    return {int(dict(labels)["pid"]) for name, labels in samples if name == "sklearn_server_worker_open_fds"}


def promtool_check(text: str) -> None:
    done = subprocess.run([promtool(), "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done


def worker_pids_that_answered(server) -> set[int]:
    return {r["http"]["pid"] for r in server.log_records()
            if isinstance(r.get("http"), dict) and r["http"].get("path", "").endswith(":predict")}


def test_metrics_add_up_across_workers_and_survive_a_killed_worker(artifact_root: Path, tmp_path: Path,
                                                                   server_factory):
    folder = tmp_path / "prometheus"  # one directory per server: a second server must not empty ours
    server = server_factory(artifact_root, PROMETHEUS_MULTIPROC_DIR=str(folder), WEB_CONCURRENCY="2")
    workers = server.worker_pids()
    assert len(workers) == 2
    scraper, traffic = Scraper(server), Traffic()

    traffic.send(server, 24)
    samples = scraper.until(expected_counts(traffic))
    assert len(worker_pids_that_answered(server)) == 2, "the traffic should have reached both workers"
    for _ in range(3):  # stable, and the same whichever worker answers the scrape
        samples = scraper.scrape()
        assert {k: samples.get(k) for k in expected_counts(traffic)} == expected_counts(traffic)
        check_invariants(samples, scraper)
    promtool_check(scraper.text)
    assert worker_pids_reported(samples) == set(workers)

    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (len(pids := server.worker_pids()) == 2 and victim not in pids):
        assert time.monotonic() < deadline, "Gunicorn did not replace the killed worker"
        time.sleep(0.1)
    # child_exit dropped the dead worker's live gauges and merged its counts into the archives
    assert not list(folder.glob(f"*_{victim}.db"))
    assert (folder / "counter_archive.db").exists()
    server.wait_ready()

    traffic.send(server, 16)
    samples = scraper.until(expected_counts(traffic))
    for _ in range(3):
        samples = scraper.scrape()
        assert {k: samples.get(k) for k in expected_counts(traffic)} == expected_counts(traffic)
        check_invariants(samples, scraper)
    promtool_check(scraper.text)

"""End to end: monitoring sees the traffic of every worker, catches drift and bad feedback, and alerts.

Windows by count or by minutes are tested in-process in tests/api/test_monitoring.py.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from tests.browser import browser_context, open_page
from tests.conftest import REPO, Webhook

pytestmark = pytest.mark.e2e

SEED = 42


def training_rows(name: str):
    """The rows the reference profile was built from (the demo's training split)."""
    if name == "diabetes":
        data = load_diabetes(as_frame=True, scaled=False)
        X, y = data.data.astype({"age": "int64", "sex": "int64"}), data.target
        return train_test_split(X, y, test_size=0.25, random_state=SEED)[0]
    data = load_breast_cancer(as_frame=True)
    return train_test_split(data.data, data.target, test_size=0.25, random_state=SEED, stratify=data.target)[0]


def as_records(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def monitored(demo_root, server_factory, webhook):
    return server_factory(demo_root, ALERT_SECONDS="1", ALERT_WEBHOOK_URL=webhook.url, GUARD_SECONDS="0",
                          METRICS_FEATURE_LABELS="1")


def wait_for(check, timeout: float = 20.0, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def monitoring(server, name: str) -> dict:
    response = server.get(f"/v1/models/{name}/monitoring?window=500")
    assert response.status_code == 200, response.text
    return response.json()


def firing(server, name: str, rule: str) -> list[dict]:
    return [a for a in monitoring(server, name)["alerts"] if a["rule"] == rule and a["state"] == "firing"]


def test_drift_is_caught_across_workers_and_alerts(monitored, webhook):
    shifted = training_rows("diabetes").sample(500, replace=True, random_state=1).reset_index(drop=True)
    shifted["bmi"] += 0.5 * training_rows("diabetes")["bmi"].std()
    calm = training_rows("breast-cancer").sample(500, replace=True, random_state=2).reset_index(drop=True)
    records, calm_records = as_records(shifted), as_records(calm)
    for i in range(10):
        if i == 5:  # a worker dies mid-traffic: what it logged stays, its replacement carries on
            victim = monitored.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda victim=victim: len(pids := monitored.worker_pids()) == 2 and victim not in pids)
            monitored.wait_ready()
        for name, rows in (("diabetes", records), ("breast-cancer", calm_records)):
            response = monitored.post(f"/v1/models/{name}:predict", json={"instances": rows[i * 50:(i + 1) * 50]})
            assert response.status_code == 200
    # every worker's predictions are in the shared log
    assert wait_for(lambda: monitoring(monitored, "diabetes")["versions"]["1"]["n"] == 500
                    and monitoring(monitored, "breast-cancer")["versions"]["1"]["n"] == 500)
    report = monitoring(monitored, "diabetes")["versions"]["1"]
    assert report["drift"]["features"]["bmi"]["status"] == "alert"
    assert report["drift"]["status"] == "alert"
    assert report["traffic"]["requests"] == 10
    calm_report = monitoring(monitored, "breast-cancer")["versions"]["1"]
    assert calm_report["n"] == 500 and calm_report["drift"]["status"] != "alert"

    assert wait_for(lambda: firing(monitored, "diabetes", "data_drift"))
    assert not firing(monitored, "breast-cancer", "data_drift")
    assert wait_for(lambda: [n for n in webhook.received if n["rule"] == "data_drift" and n["status"] == "firing"])
    assert all(n["model"] != "breast-cancer" or n["rule"] != "data_drift" for n in webhook.received)

    assert wait_for(lambda: gauge(monitored, "sklearn_server_alert_state", model="diabetes", rule="data_drift") == 3)
    # the figures behind the alert are exported too, as of the latest evaluation
    assert wait_for(lambda: gauge(monitored, "sklearn_server_monitoring_window_predictions", model="diabetes",
                                  version="1") == 500)
    # exported one after another by the evaluation: wait for this one too rather than race it
    assert wait_for(lambda: (gauge(monitored, "sklearn_server_drift_score", model="diabetes", feature="bmi",
                                   statistic="psi") or 0) > 0.1)


def gauge(server, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(server.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_request_time_quality_is_counted(monitored):
    row = as_records(training_rows("diabetes").head(1))[0]
    row["bmi"] = 60.0  # valid (the schema only says >= 0) but far outside the training range
    assert monitored.post("/v1/models/diabetes:predict", json={"instances": [row, row]}).status_code == 200
    assert wait_for(lambda: gauge(monitored, "sklearn_server_data_quality_issues_total", model="diabetes",
                                  check="out_of_range") == 2)


def test_degraded_feedback_moves_live_accuracy_and_fires(monitored):
    rows = as_records(training_rows("breast-cancer").sample(300, replace=True, random_state=3))
    ids, predictions = [], []
    for i in range(3):
        answer = monitored.post("/v1/models/breast-cancer:predict", json={"instances": rows[i * 100:(i + 1) * 100]}).json()
        ids += answer["ids"]
        predictions += answer["predictions"]
    assert wait_for(lambda: monitoring(monitored, "breast-cancer")["versions"]["1"]["n"] == 300)
    # ground truth that says the model is right half of the time
    labels = [p if i % 2 else 1 - p for i, p in enumerate(predictions)]
    batch = [{"id": i, "label": label} for i, label in zip(ids, labels, strict=True)]
    result = monitored.post("/v1/models/breast-cancer/feedback",
                            json={"feedback": batch + [{"id": ids[0], "label": 1}, {"id": "nope-0", "label": 0}]})
    assert result.status_code == 200
    assert result.json()["accepted"] == 300
    assert result.json()["duplicate"] == [ids[0]] and result.json()["unknown"] == ["nope-0"]
    performance = monitoring(monitored, "breast-cancer")["versions"]["1"]["performance"]
    assert performance["labelled"] == 300
    assert performance["metrics"]["accuracy"] == pytest.approx(0.5, abs=0.01)
    assert performance["status"] == "alert"
    assert wait_for(lambda: firing(monitored, "breast-cancer", "live_performance"))
    bad = monitored.post("/v1/models/breast-cancer/feedback", json={"feedback": [{"id": ids[1]}]})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["errors"][0]["field"].endswith("label")


def test_the_monitoring_page_renders_live_data_in_chromium(monitored, tmp_path):
    rows = as_records(training_rows("diabetes").sample(200, replace=True, random_state=4))
    for i in range(4):
        assert monitored.post("/v1/models/diabetes:predict", json={"instances": rows[i * 50:(i + 1) * 50]}).ok
    assert wait_for(lambda: monitoring(monitored, "diabetes")["versions"]["1"]["n"] == 200)
    with browser_context(tmp_path / "profile") as context, open_page(context) as (page, recorder):
        response = page.goto(f"{monitored.base}/monitoring/diabetes")
        assert response.status == 200
        page.wait_for_load_state("load")
        assert page.locator("h1").inner_text().startswith("diabetes")
        assert page.get_by_role("row", name="bmi").first.is_visible()
        assert page.locator("svg.chart").count() >= 4
        shot = tmp_path / "monitoring-live.png"
        page.screenshot(path=str(shot), full_page=True)
        (REPO / "var" / "screenshots").mkdir(parents=True, exist_ok=True)
        (REPO / "var" / "screenshots" / "monitoring-live.png").write_bytes(shot.read_bytes())
        overview = page.goto(f"{monitored.base}/monitoring")
        assert overview.status == 200 and page.get_by_text("breast-cancer").first.is_visible()
    assert recorder.console_errors == [] and recorder.page_errors == [] and recorder.failed == []
    assert recorder.foreign(monitored.base) == []

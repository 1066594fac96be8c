"""End to end: two replicas (two Gunicorn masters) that share one PostgreSQL database see each
other's predictions and feedback, and agree on alert state."""

from __future__ import annotations

import time

import pytest
from sklearn.datasets import load_breast_cancer

from service.store import Store
from tests import postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
MODEL = "breast-cancer"


def rows(n: int) -> list[list[float]]:
    return load_breast_cancer().data[:n].tolist()


def wait_for(condition, timeout: float = 15.0):
    """Return the first truthy value of ``condition()``; writes happen after each response is sent."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def test_two_replicas_share_predictions_feedback_and_alerts(demo_root, server_factory, postgres_url):
    env = {"DATABASE_URL": postgres_url, "ALERT_SECONDS": "1", "WEB_CONCURRENCY": "2"}
    replicas = [server_factory(demo_root, **env), server_factory(demo_root, **env)]
    ids = []
    for replica, n in zip(replicas, (30, 20), strict=True):
        answer = replica.post(f"/v1/models/{MODEL}:predict", json={"instances": rows(n)})
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["ids"])
    version = str(replicas[0].post(f"/v1/models/{MODEL}:predict", json={"instances": rows(1)}).json()["version"])

    def counted(replica):
        figures = replica.get(f"/v1/models/{MODEL}/monitoring").json()["versions"].get(version, {})
        return (figures.get("n"), figures.get("traffic", {}).get("requests")) == (51, 3)

    for replica in replicas:  # either replica counts the predictions (and requests) of both
        wait_for(lambda replica=replica: counted(replica))

    labels = [{"id": pid, "label": 0} for pid in ids[1]]  # predictions made by the second replica
    sent = replicas[0].post(f"/v1/models/{MODEL}/feedback", json={"feedback": labels})
    assert sent.status_code == 200 and sent.json()["accepted"] == 20, sent.text
    again = replicas[1].post(f"/v1/models/{MODEL}/feedback", json={"feedback": labels[:5]})
    assert again.json()["accepted"] == 0 and len(again.json()["duplicate"]) == 5
    performance = replicas[1].get(f"/v1/models/{MODEL}/monitoring").json()["versions"][version]["performance"]
    assert performance["labelled"] == 20

    # Alert state lives in the database, evaluated by one process of the four: the one whose
    # session holds the evaluator's lock.
    store = Store.from_url(postgres_url)
    wait_for(lambda: store.fetch("SELECT count(*) FROM alerts")[0][0] > 0)
    assert store.fetch("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'prediction-server-lock'") == [(1,)]
    alerts = [r.get(f"/v1/models/{MODEL}/monitoring").json()["alerts"] for r in replicas]
    assert alerts[0] == alerts[1]
    store.close()
    assert not [line for r in replicas for line in r.log_records() if line.get("level") == "error"]


def test_a_server_booted_during_a_database_outage_serves_then_logs_once_it_is_back(demo_root, server_factory):
    """Workers boot (and are recycled) whether or not PostgreSQL answers: the outage costs the log, not serving."""
    with postgres.running_postgres() as database:  # its own server: the session's keeps running
        url = database.create_database()
        database.stop()
        server = server_factory(demo_root, DATABASE_URL=url, WEB_CONCURRENCY="2", ALERT_SECONDS="1", wait="/healthz")
        assert server.get("/healthz").status_code == 200
        for _ in range(4):  # both workers, likely: each answers and counts its failed writes
            answer = server.post(f"/v1/models/{MODEL}:predict", json={"instances": rows(3)})
            assert answer.status_code == 200, answer.text
        version = str(answer.json()["version"])
        assert server.proc.poll() is None
        database.start()

        def logged():
            server.post(f"/v1/models/{MODEL}:predict", json={"instances": rows(1)})
            answer = server.get(f"/v1/models/{MODEL}/monitoring")
            return answer.status_code == 200 and answer.json()["versions"].get(version, {}).get("n", 0) > 0

        wait_for(logged, timeout=10)
        records = server.log_records()
        assert any(r.get("message", "").startswith("store schema could not be created") for r in records)
        assert any(r.get("message", "").startswith("store write failed") for r in records)
        assert not [r for r in records if r.get("message") == "Worker failed to boot."]

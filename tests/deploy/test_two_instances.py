"""Two instances of the server behind one Nginx, sharing one artifacts folder and one PostgreSQL.

Each instance is its own Gunicorn master (own port, own Prometheus folder, own local files), as
two machines would run it; what they share is what a deployment shares: the model registry on
disk (artifacts/<model>/registry.json) and the database. Nginx is deploy/nginx/prediction-server.conf
with both instances in its upstream. Shown here: a registry change made on one instance reaches
the other within the poll interval; monitoring and feedback count the traffic of both; alert
rules are evaluated, and notified, once for the whole deployment.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

from service.security.keys import create_key
from service.store import Store
from tests.builders import copy_version
from tests.conftest import Server, Webhook, free_port, start_server
from tests.deploy.conftest import DEPLOY, Proxy, render, start_nginx, wait_until
from tests.postgres import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

POLL_SECONDS = 1.0
#: How long a registry change may take to reach the other instance: one poll, plus the refresh
#: (loading the new version) and scheduling slack on a busy 2-core machine.
REACH_SECONDS = POLL_SECONDS + 2.0
ALERT_SECONDS = 1
CANCER_ROW = [[1.0] * 30]
WINDOW = 5000  # larger than everything the module sends: the monitoring report counts it all


@dataclass
class Deployment:
    """Instances A and B, the Nginx in front of both, and what they share."""

    a: Server
    b: Server
    nginx: Proxy
    database_url: str
    webhook: Webhook

    @property
    def instances(self) -> tuple[Server, Server]:
        return self.a, self.b


def two_instance_site(ports: tuple[int, int], listen: int) -> str:
    """deploy/nginx/prediction-server.conf with both instances (TCP) in the upstream."""
    servers = "\n    ".join(f"server 127.0.0.1:{port} max_fails=0;" for port in ports)
    return render(DEPLOY / "nginx" / "prediction-server.conf", {
        "server unix:/run/prediction-server/gunicorn.sock max_fails=0;": servers,
        "listen 80;": f"listen 127.0.0.1:{listen};",
    })


@pytest.fixture(scope="module")
def deployment(demo_root: Path, tmp_path_factory: pytest.TempPathFactory,
               postgres_server: PostgresServer) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("two-instances")
    artifacts = root / "shared-artifacts"
    shutil.copytree(demo_root, artifacts)
    copy_version(artifacts, "breast-cancer", 1, 2)  # the same model under a new number, to promote
    keys_file = root / "keys.json"
    key = create_key(keys_file, "ops", ["predict", "read", "admin"])
    database_url = postgres_server.create_database()
    with ExitStack() as stack:
        webhook = Webhook()
        stack.callback(webhook.close)
        shared = dict(DATABASE_URL=database_url, API_KEYS_FILE=str(keys_file), FORWARDED_ALLOW_IPS="127.0.0.1",
                      REGISTRY_POLL_SECONDS=str(POLL_SECONDS), ALERT_SECONDS=str(ALERT_SECONDS),
                      ALERT_WEBHOOK_URL=webhook.url, GUARD_SECONDS="0", WEB_CONCURRENCY="2",
                      # the tests read the figures right after each change: a cached report would lag
                      MONITORING_CACHE_SECONDS="0")
        instances = []
        for name in ("a", "b"):
            local = root / f"instance-{name}"  # what each machine keeps to itself
            local.mkdir()
            server = start_server(artifacts, local, wait=None, PROMETHEUS_MULTIPROC_DIR=str(local / "prometheus"),
                                  LOCAL_ADMIN_KEYS_FILE=str(local / "local-admin-keys.json"), **shared)
            stack.callback(server.stop)
            server.session.headers["X-API-Key"] = key
            instances.append(server)
        for server in instances:  # booted side by side; now wait for both
            server.wait_ready()
        port = free_port()
        nginx = start_nginx(root / "nginx", two_instance_site((instances[0].port, instances[1].port), port), port)
        stack.callback(nginx.stop)
        nginx.session.headers["X-API-Key"] = key
        nginx.wait_ready()
        yield Deployment(instances[0], instances[1], nginx, database_url, webhook)


def access_records(server: Server) -> list[dict]:
    """The access-log entries of one instance (Gunicorn's JSON lines with an ``http`` object)."""
    return [record["http"] for record in server.log_records() if isinstance(record.get("http"), dict)]


def version_answering(client: Server | Proxy, path: str = "/v1/models/breast-cancer:predict") -> str:
    response = client.post(path, json={"instances": CANCER_ROW})
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def test_a_label_set_on_a_reaches_b_and_nginx_converges(deployment: Deployment):
    a, b, nginx = deployment.a, deployment.b, deployment.nginx
    assert {version_answering(a), version_answering(b), version_answering(nginx)} == {"1"}

    changed = a.session.put(a.base + "/v1/models/breast-cancer/labels/production", timeout=30,
                            json={"version": 2, "reason": "two-instance test"})
    assert changed.status_code == 200, changed.text
    at = time.monotonic()
    wait_until(lambda: version_answering(b) == "2", REACH_SECONDS, message="instance B answering with version 2")
    lag = time.monotonic() - at
    print(f"label set on A reached B after {lag:.2f} s (poll {POLL_SECONDS} s)")

    # Every worker of both instances moves: each polls the shared registry on its own.
    workers = {pid for server in deployment.instances for pid in server.worker_pids()}
    assert len(workers) == 4

    def every_worker_moved() -> bool:
        version_answering(nginx)
        moved = {r["pid"] for server in deployment.instances for r in access_records(server)
                 if r["model_version"] == "2"}
        return workers <= moved

    wait_until(every_worker_moved, 20, message="every worker of A and B answering version 2")
    assert [version_answering(nginx) for _ in range(10)] == ["2"] * 10
    # B tells the same story as A: the history lives in the shared registry
    history = b.get("/v1/models/breast-cancer/history").json()["history"]
    assert history[-1]["reason"] == "two-instance test"


def diabetes_rows(n: int, shift_bmi: float = 0.0, seed: int = 0) -> list[dict]:
    """``n`` rows like the demo diabetes model's training data, ``bmi`` moved by ``shift_bmi`` standard deviations."""
    data = load_diabetes(as_frame=True, scaled=False)
    frame = data.data.astype({"age": "int64", "sex": "int64"})
    train = train_test_split(frame, data.target, test_size=0.25, random_state=42)[0]
    sample = train.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    sample["bmi"] += shift_bmi * train["bmi"].std()
    return json.loads(sample.to_json(orient="records"))


def diabetes_figures(server: Server | Proxy) -> tuple[int, int, int]:
    """(predictions, predict requests, labelled predictions) of diabetes version 1 in the monitoring window."""
    response = server.get(f"/v1/models/diabetes/monitoring?window={WINDOW}")
    assert response.status_code == 200, response.text
    figures = response.json()["versions"].get("1", {})
    return (figures.get("n", 0), figures.get("traffic", {}).get("requests", 0),
            figures.get("performance", {}).get("labelled", 0))


def predict_requests(server: Server, model: str) -> float:
    """This instance's own count of answered predict requests for ``model``, from its /metrics."""
    total = 0.0
    for family in text_string_to_metric_families(server.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "sklearn_server_prediction_requests_total" and sample.labels.get("model") == model:
                total += sample.value
    return total


def test_monitoring_and_feedback_count_the_traffic_of_both(deployment: Deployment):
    a, b, nginx = deployment.a, deployment.b, deployment.nginx
    n = 40
    before = diabetes_figures(a)
    metrics_before = {server.port: predict_requests(server, "diabetes") for server in deployment.instances}
    ids: dict[str, str] = {}  # request id -> prediction id
    for i, row in enumerate(diabetes_rows(n, seed=7)):
        request_id = f"two-instances-{i}"
        response = nginx.post("/v1/models/diabetes:predict", json={"instances": [row]},
                              headers={"X-Request-ID": request_id})
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == request_id
        ids[request_id] = response.json()["ids"][0]

    def served_by(server: Server) -> set[str]:
        return {r["request_id"] for r in access_records(server) if r["request_id"] in ids}

    # Each access line is written after its response: wait until all N are accounted for.
    wait_until(lambda: len(served_by(a) | served_by(b)) == n, 10, message="every request in an access log")
    by_a, by_b = served_by(a), served_by(b)
    print(f"Nginx sent {len(by_a)} predictions to A and {len(by_b)} to B")
    assert by_a and by_b and not by_a & by_b
    # Either instance, directly or through Nginx, counts the predictions of both (each instance's
    # writer thread stores them in the shared database just after the response).
    for reader in (a, b, nginx):
        wait_until(lambda reader=reader: diabetes_figures(reader) == (before[0] + n, before[1] + n, before[2]), 10,
                   message=f"monitoring from {reader.base} counting all {n} predictions")
    # Separate Prometheus folders: each instance's /metrics counts what it answered, not the sum.
    # (The writer counts a batch before storing it, so once stored, every count is in.)
    assert predict_requests(a, "diabetes") - metrics_before[a.port] == len(by_a)
    assert predict_requests(b, "diabetes") - metrics_before[b.port] == len(by_b)

    # Feedback for A's predictions through B, and for B's through A: the prediction log is shared.
    for answered, other in ((by_a, b), (by_b, a)):
        labels = [{"id": ids[request_id], "label": 150.0} for request_id in sorted(answered)]
        sent = other.post("/v1/models/diabetes/feedback", json={"feedback": labels})
        assert sent.status_code == 200, sent.text
        assert sent.json()["accepted"] == len(labels) and not sent.json()["unknown"], sent.json()
    for reader in (a, b, nginx):
        assert diabetes_figures(reader) == (before[0] + n, before[1] + n, before[2] + n)


def test_alert_rules_are_evaluated_and_notified_once(deployment: Deployment):
    a, b, nginx = deployment.a, deployment.b, deployment.nginx
    rows = diabetes_rows(500, shift_bmi=0.5, seed=1)
    logged = diabetes_figures(nginx)[0]
    for i in range(10):  # through Nginx: both instances log their half
        response = nginx.post("/v1/models/diabetes:predict", json={"instances": rows[i * 50:(i + 1) * 50]})
        assert response.status_code == 200, response.text
    wait_until(lambda: diabetes_figures(nginx)[0] == logged + 500, 10, message="both halves in the shared log")

    def drift_notices() -> list[dict]:
        return [n for n in deployment.webhook.received
                if (n["model"], n["rule"], n["status"]) == ("diabetes", "data_drift", "firing")]

    wait_until(drift_notices, 30, message="a data_drift notification at the webhook")
    fired = drift_notices()[0]

    def alert_row() -> dict | None:
        alerts = b.get(f"/v1/models/diabetes/monitoring?window={WINDOW}").json()["alerts"]
        return next((x for x in alerts if x["rule"] == "data_drift" and x["version"] == 1), None)

    # Three more evaluation rounds after the change: any second evaluator would have announced it too.
    wait_until(lambda: (row := alert_row()) and row["updated_at"] >= fired["since"] + 3 * ALERT_SECONDS, 20,
               message="three more alert evaluations after the firing one")
    assert alert_row()["state"] == "firing"
    assert len(drift_notices()) == 1, deployment.webhook.received
    keys = [(n["model"], n["version"], n["rule"], n["status"], n["since"]) for n in deployment.webhook.received]
    assert len(keys) == len(set(keys)), deployment.webhook.received  # no transition announced twice

    # The one log line of the firing transition is in the log of exactly one instance.
    lines = [(server.port, record) for server in deployment.instances for record in server.log_records()
             if record.get("alert_status") == "firing" and record.get("rule") == "data_drift"]
    assert len(lines) == 1, lines
    # One session of the four workers holds the evaluator's lock; the stored state is one row per rule.
    store = Store.from_url(deployment.database_url)
    try:
        assert store.fetch("SELECT count(*) FROM pg_stat_activity "
                           "WHERE application_name = 'prediction-server-lock'") == [(1,)]
        assert store.fetch("SELECT count(*) FROM alerts WHERE model = 'diabetes' AND version = 1 "
                           "AND rule = 'data_drift'") == [(1,)]
    finally:
        store.close()
    seen_by_a = [x for x in a.get(f"/v1/models/diabetes/monitoring?window={WINDOW}").json()["alerts"]
                 if x["rule"] == "data_drift"]
    assert [(x["state"], x["since"]) for x in seen_by_a] == [("firing", alert_row()["since"])]

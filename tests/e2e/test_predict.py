"""End to end: what only real Gunicorn shows about a prediction, its access log.

Layouts, routes, probes and request ids are tested in-process in tests/api/test_predict.py.
"""

from __future__ import annotations

import pytest

from tests.builders import wait_until

pytestmark = pytest.mark.e2e

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]


def test_access_log_is_json_with_the_request_id(demo_server):
    predicted = demo_server.post("/v1/models/diabetes:predict", json={"instances": [ROW]},
                                 headers={"X-Request-ID": "access-log-check-2"})
    assert predicted.status_code == 200 and predicted.headers["X-Model-Version"] == "1"
    response = demo_server.get("/healthz", headers={"X-Request-ID": "access-log-check-1"})
    assert response.status_code == 200

    def access_records() -> dict:
        return {r["http"]["request_id"]: r["http"] for r in demo_server.log_records() if r.get("logger") == "gunicorn.access"}

    # Gunicorn writes the access log line after the response has gone out: wait for both
    access = wait_until(lambda: (found := access_records()) and {"access-log-check-1", "access-log-check-2"} <= set(found)
                        and found, timeout=10, message="both requests in the access log")
    assert access["access-log-check-1"]["status"] == 200 and access["access-log-check-1"]["path"] == "/healthz"
    assert access["access-log-check-2"]["path"] == "/v1/models/diabetes:predict"
    # every field of the line, the model version that answered among them (none for a health probe)
    assert set(access["access-log-check-2"]) == {"remote", "peer", "method", "path", "status", "bytes", "duration_ms",
                                                 "request_id", "model_version", "user_agent", "pid"}
    assert access["access-log-check-2"]["model_version"] == "1" and access["access-log-check-2"]["method"] == "POST"
    assert access["access-log-check-1"]["model_version"] is None
    line = next(r for r in demo_server.log_records() if r.get("http", {}).get("request_id") == "access-log-check-2")
    assert (line["level"], line["message"]) == ("info", "request")

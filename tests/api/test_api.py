"""The HTTP shell in-process (Flask's test client): error mapping that needs no server."""

from __future__ import annotations

import pytest


@pytest.fixture
def app_and_db(make_app):
    """An app and its SQLite file, which the tests break (the app is stopped before the next test starts)."""
    app = make_app()
    return app, app.extensions["store"].path


def test_a_broken_database_is_a_503_in_the_error_shape(app_and_db):
    app, db = app_and_db
    client = app.test_client()
    assert client.get("/v1/models/diabetes/monitoring").status_code == 200
    for path in db.parent.glob(f"{db.name}*"):
        path.write_bytes(b"this is not a database" * 100)
    app.extensions["store"].close()  # drop cached connections so the next query reads the broken file
    for url in ("/v1/models/diabetes/monitoring", "/v1/models/diabetes/comparison", "/monitoring/diabetes"):
        response = client.get(url)
        assert response.status_code == 503, url
        assert response.json["error"]["code"] == "store_unavailable"
        assert "Traceback" not in response.get_data(as_text=True)


def test_predictions_still_answer_when_the_log_cannot_be_written(app_and_db):
    app, db = app_and_db
    client = app.test_client()
    for path in db.parent.glob(f"{db.name}*"):
        path.write_bytes(b"this is not a database" * 100)
    app.extensions["store"].close()
    row = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
    response = client.post("/v1/models/diabetes:predict", json={"instances": [row]})
    assert response.status_code == 200
    app.extensions["observer"].flush()  # the background writer's work: it fails quietly and is counted
    assert app.extensions["store"].write_failures >= 1

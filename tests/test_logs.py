import io
import json
import logging
import re

import pytest
from flask import Flask, g, jsonify

from service import logs
from service.api import request_ids
from service.errors import NotFound, ServiceError


@pytest.fixture
def stream():
    """Install the JSON handler on a buffer and take it off again after the test."""
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    logs.configure_logging("debug", stream=buffer)
    yield buffer
    for handler in [h for h in root.handlers if isinstance(h, logs._JsonHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_one_json_object_per_line(stream):
    logging.getLogger("service.test").info("loaded %s", "model", extra={"model": "iris", "version": 2})
    (doc,) = lines(stream)
    assert doc["message"] == "loaded model"
    assert doc["level"] == "info"
    assert doc["logger"] == "service.test"
    assert doc["model"] == "iris" and doc["version"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
    assert "request_id" not in doc and "exc" not in doc


def test_exceptions_carry_type_and_traceback(stream):
    try:
        raise ZeroDivisionError("no rows to average")
    except ZeroDivisionError:
        logging.getLogger("service.test").exception("boom")
    (doc,) = lines(stream)
    assert doc["exc_type"] == "ZeroDivisionError"
    assert "Traceback" in doc["exc"] and "no rows to average" in doc["exc"]
    assert "\n" not in stream.getvalue().rstrip("\n")  # still one physical line


def test_extras_cannot_overwrite_core_fields_and_odd_values_still_log(stream):
    logging.getLogger("x").warning("hi", extra={"level": "fake", "path": logs, "big": 2**70, "d": {1: "a"}})
    (doc,) = lines(stream)
    assert doc["level"] == "warning"
    assert "service.logs" in doc["path"]
    assert doc["big"] == 2**70


def test_configure_is_idempotent_and_sets_level(stream):
    logs.configure_logging("warning", stream=stream)
    logs.configure_logging("warning", stream=stream)
    assert sum(isinstance(h, logs._JsonHandler) for h in logging.getLogger().handlers) == 1
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert [d["message"] for d in lines(stream)] == ["shown"]


def test_unknown_level():
    with pytest.raises(ValueError, match="unknown log level"):
        logs.configure_logging("chatty")


# -- Request ids ---------------------------------------------------------------------------------


def make_app() -> Flask:
    app = Flask("test_logs")
    request_ids.init_app(app)

    @app.errorhandler(ServiceError)
    def handle(error: ServiceError):
        return jsonify(error.to_dict()), error.status

    @app.get("/ok")
    def ok():
        logging.getLogger("service.view").info("in view")
        return {"g": g.request_id, "ctx": logs.current_request_id()}

    @app.get("/missing")
    def missing():
        raise NotFound()

    @app.get("/crash")
    def crash():
        raise RuntimeError("unhandled")

    return app


@pytest.fixture
def client():
    return make_app().test_client()


def test_request_id_is_taken_from_a_sane_header(client):
    response = client.get("/ok", headers={"X-Request-ID": "abc-123:4.5_6"})
    assert response.headers["X-Request-ID"] == "abc-123:4.5_6"
    assert response.json == {"g": "abc-123:4.5_6", "ctx": "abc-123:4.5_6"}


@pytest.mark.parametrize("sent", [None, "", "has space", "a" * 129, "semi;colon", "ünï"])
def test_request_id_is_generated_otherwise(client, sent):
    headers = {} if sent is None else {"X-Request-ID": sent}
    response = client.get("/ok", headers=headers)
    rid = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert response.json["g"] == rid


def test_every_response_carries_the_id(client):
    handled = client.get("/missing", headers={"X-Request-ID": "r1"})
    assert handled.status_code == 404 and handled.headers["X-Request-ID"] == "r1"
    routing = client.get("/no-such-route", headers={"X-Request-ID": "r2"})
    assert routing.status_code == 404 and routing.headers["X-Request-ID"] == "r2"
    crashed = client.get("/crash", headers={"X-Request-ID": "r3"})
    assert crashed.status_code == 500 and crashed.headers["X-Request-ID"] == "r3"
    assert "unhandled" not in crashed.get_data(as_text=True)


def test_logs_inside_a_request_carry_the_id_and_it_is_cleared_after(client, stream):
    client.get("/ok", headers={"X-Request-ID": "trace-me"})
    docs = [d for d in lines(stream) if d["message"] == "in view"]
    assert docs[0]["request_id"] == "trace-me"
    assert logs.current_request_id() is None
    logging.getLogger("x").info("outside")
    assert "request_id" not in lines(stream)[-1]


def test_id_outlives_other_hooks(stream):
    app = make_app()
    seen = {}

    @app.before_request
    def early():
        seen["before"] = logs.current_request_id()

    @app.after_request
    def replace(response):
        return app.response_class("replaced")

    @app.teardown_request
    def late(exc):
        seen["teardown"] = logs.current_request_id()

    response = app.test_client().get("/ok", headers={"X-Request-ID": "hooks"})
    assert response.get_data(as_text=True) == "replaced"
    assert response.headers["X-Request-ID"] == "hooks"
    assert seen == {"before": "hooks", "teardown": "hooks"}

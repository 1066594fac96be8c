"""Work registered during a request runs once the response is closed, never before."""

from __future__ import annotations

from flask import Flask

from service.api.after_response import after_response


def test_a_callback_runs_when_the_response_closes_and_only_then():
    app = Flask(__name__)
    calls = []

    @app.get("/")
    def view():
        assert after_response(lambda: calls.append("closed")) is True
        return "answer"

    response = app.test_client().get("/")
    assert response.get_data(as_text=True) == "answer" and calls == []  # the client has its answer first
    response.close()  # what a WSGI server does after the last byte
    assert calls == ["closed"]


def test_outside_a_request_nothing_is_registered():
    assert after_response(lambda: None) is False

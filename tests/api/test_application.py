"""The service's Flask class: sync checks made once per function, coroutine functions left to Flask."""

from __future__ import annotations

from flask import Flask

from service.api.application import ServiceFlask


def test_a_synchronous_function_is_checked_once(monkeypatch):
    checked = []
    original = Flask.ensure_sync

    def counting(self, func):
        checked.append(func)
        return original(self, func)

    monkeypatch.setattr(Flask, "ensure_sync", counting)
    app = ServiceFlask(__name__)

    def view():
        return "ok"

    assert app.ensure_sync(view) is view
    assert app.ensure_sync(view) is view
    assert checked == [view]


def test_a_coroutine_function_goes_to_flask_every_time(monkeypatch):
    app = ServiceFlask(__name__)
    wrapped = []

    def async_to_sync(func):
        wrapped.append(func)
        return lambda *args, **kwargs: "ran"

    monkeypatch.setattr(app, "async_to_sync", async_to_sync)

    async def view():
        return "ok"

    assert app.ensure_sync(view)() == "ran" and app.ensure_sync(view)() == "ran"
    assert wrapped == [view, view]


def test_requests_run_through_the_remembered_hooks():
    app = ServiceFlask(__name__)
    seen = []
    app.before_request(lambda: seen.append("before"))

    @app.get("/")
    def index():
        return "ok"

    client = app.test_client()
    assert client.get("/").data == b"ok" and client.get("/").data == b"ok"
    assert seen == ["before", "before"]

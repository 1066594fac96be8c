"""The service's Flask class: sync checks made once per function, coroutine functions left to Flask."""

from __future__ import annotations

import pytest
from flask import Flask
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map

from service.api.application import MatchCache, ServiceFlask


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


def _outcome(adapter, path, method):
    try:
        rule, values = adapter.match(path, method, return_rule=True)
    except HTTPException as exc:  # 404, 405 and redirects (RequestRedirect is one) alike
        return type(exc).__name__, getattr(exc, "new_url", None), getattr(exc, "valid_methods", None)
    return rule.rule, rule.endpoint, values


MATCH_CASES = [
    ("/v1/models/breast-cancer:predict", "POST"), ("/v1/models/breast-cancer:predict", "GET"),
    ("/v1/models/breast-cancer/versions/3:predict", "POST"), ("/v1/models/breast-cancer/versions/x:predict", "POST"),
    ("/v1/models/diabetes/labels/production:predict", "POST"), ("/v1/models/diabetes", "GET"),
    ("/v1/models/diabetes/", "GET"), ("/v2/models/diabetes/infer", "POST"), ("/healthz", "GET"), ("/healthz/", "GET"),
    ("/no-such-route", "GET"), ("/v1/models/..:predict", "POST"), ("/v1//models/diabetes", "GET"),
]


def test_kept_matches_agree_with_werkzeugs_router(make_app):
    """Each path, asked twice (the second answer may come from what was kept), matches as a plain Map of
    the same rules says: same rule and arguments, or the same 404, 405 or redirect."""
    app = make_app()
    plain = Map([rule.empty() for rule in app.url_map.iter_rules()], strict_slashes=app.url_map.strict_slashes,
                converters=app.url_map.converters)
    assert isinstance(app.url_map._matcher, MatchCache)
    for _ in range(2):
        for path, method in MATCH_CASES:
            ours = _outcome(app.url_map.bind("127.0.0.1:8000"), path, method)
            assert ours == _outcome(plain.bind("127.0.0.1:8000"), path, method), (path, method)


def test_a_kept_match_hands_each_request_its_own_arguments_and_a_new_rule_is_seen():
    app = ServiceFlask(__name__)
    app.add_url_rule("/items/<int:item>", "item", lambda item: str(item))
    adapter = app.url_map.bind("localhost")
    first = adapter.match("/items/7", "GET")[1]
    first["item"] = "changed by a hook"
    assert adapter.match("/items/7", "GET") == ("item", {"item": 7})
    with pytest.raises(NotFound):
        adapter.match("/other", "GET")
    app.add_url_rule("/other", "other", lambda: "other")  # rules added later are matched (the kept ones forgotten)
    app.add_url_rule("/items/7", "seven", lambda: "seven")  # a static rule wins over a converter, as in Werkzeug
    adapter = app.url_map.bind("localhost")
    assert adapter.match("/other", "GET") == ("other", {})
    assert adapter.match("/items/7", "GET") == ("seven", {})

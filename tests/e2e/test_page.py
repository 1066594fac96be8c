"""The monitoring page in real headless Chromium, served by a real WSGI server on loopback.

The app here holds only the dashboard blueprint and a fake ``monitoring`` object that returns
fixture reports, so the page is tested apart from the maths that fills it.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from service.api import auth, dashboard
from service.api.converters import URL_CONVERTERS
from service.api.handlers import register_error_handlers
from service.config import Config
from service.errors import ModelNotFound
from tests.browser import browser_context, chromium_path, open_page
from tests.conftest import REPO
from tests.monitoring.test_page import EVIL, empty_report, full_report

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPO / "var" / "screenshots"


class FakeMonitoring:
    """The interface the lead provides on ``app.extensions["monitoring"]``, over fixed reports."""

    def __init__(self, reports: list[dict]) -> None:
        self.reports = {r["model"]: r for r in reports}
        self.windows: list[int | None] = []

    def overview(self, window: int | None = None) -> list[dict]:
        self.windows.append(window)
        return list(self.reports.values())

    def model_report(self, name: str, window: int | None = None) -> dict:
        self.windows.append(window)
        if name not in self.reports:
            raise ModelNotFound(details={"model": name})
        return self.reports[name]


def make_app(monitoring: FakeMonitoring) -> Flask:
    app = Flask("service")
    app.url_map.converters.update(URL_CONVERTERS)
    app.url_map.strict_slashes = False
    auth.init_app(app, Config())  # loopback, no keys file: open
    app.extensions["monitoring"] = monitoring
    app.register_blueprint(dashboard.bp)
    register_error_handlers(app)
    return app


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakeMonitoring]]:
    monitoring = FakeMonitoring([full_report(), empty_report()])
    server = make_server("127.0.0.1", 0, make_app(monitoring), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", monitoring
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    chromium_path()
    with browser_context(tmp_path_factory.mktemp("chromium-profile")) as ctx:
        yield ctx


def keep(shot: Path, name: str) -> None:
    """Copy a screenshot where people look for it (``var/`` is git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOTS / name)


def assert_clean(recorder, origin: str) -> None:
    assert recorder.console_errors == []
    assert recorder.page_errors == []
    assert recorder.failed == []
    assert recorder.dialogs == []  # the feature named <script>alert(1)</script> did not run
    assert recorder.foreign(origin) == []


def test_model_page_renders_with_data(served, context, tmp_path):
    origin, monitoring = served
    with open_page(context) as (page, recorder):
        response = page.goto(f"{origin}/monitoring/breast-cancer?window=500")
        assert response.status == 200
        assert "default-src 'none'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")

        assert page.title().startswith("breast-cancer")
        assert page.locator("h1").inner_text().startswith("breast-cancer")
        assert page.get_by_role("row", name="mean radius").first.is_visible()
        assert page.locator(".badge.alert").first.is_visible()
        assert "✕ alert" in page.locator(".badge.alert").first.inner_text()
        assert page.get_by_text(EVIL).first.is_visible()  # shown as text, not run
        assert page.get_by_text("Not enough labelled predictions").is_visible()
        assert page.get_by_text("No traffic for this version").is_visible()

        charts = page.locator("svg.chart")
        assert charts.count() >= 8
        assert page.locator('svg[aria-label="Requests and errors over time"] rect.bar').count() >= 15
        assert page.locator("svg.chart rect.bar.current").count() > 0
        box = page.locator('svg[aria-label="Requests and errors over time"]').bounding_box()
        assert box and box["width"] > 300 and box["height"] > 80

        shot = tmp_path / "monitoring.png"
        page.screenshot(path=str(shot), full_page=True)
        keep(shot, "monitoring.png")
    assert_clean(recorder, origin)
    assert 500 in monitoring.windows


def test_overview_lists_models(served, context, tmp_path):
    origin, _ = served
    with open_page(context) as (page, recorder):
        assert page.goto(f"{origin}/monitoring").status == 200
        assert page.get_by_role("link", name="breast-cancer").is_visible()
        assert page.get_by_role("link", name="diabetes").is_visible()
        assert page.get_by_text("2 active alerts").is_visible()
        assert page.get_by_text("12.5 ms").is_visible()

        page.get_by_role("link", name="diabetes").click()
        page.wait_for_url(f"{origin}/monitoring/diabetes")
        assert page.get_by_text("No alert is firing").is_visible()

        page.fill("#window", "250")
        page.click("button[type=submit]")
        page.wait_for_url(f"{origin}/monitoring/diabetes?window=250")

        shot = tmp_path / "overview.png"
        page.goto(f"{origin}/monitoring")
        page.screenshot(path=str(shot), full_page=True)
        keep(shot, "monitoring-overview.png")
    assert_clean(recorder, origin)


@pytest.mark.parametrize("window", ["0", "9", "-1", "abc", "100001", "1.5", "١٢", "²"])
def test_a_bad_window_is_a_422_in_the_error_shape(served, window):
    origin, _ = served
    response = requests.get(f"{origin}/monitoring/breast-cancer", params={"window": window}, timeout=10)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"
    assert response.json()["error"]["details"]["errors"][0]["field"] == "window"


def test_feature_names_are_escaped_in_the_html(served):
    origin, _ = served
    response = requests.get(f"{origin}/monitoring/breast-cancer", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert EVIL not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


def test_an_unknown_model_is_a_404(served):
    origin, _ = served
    response = requests.get(f"{origin}/monitoring/no-such-model", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"

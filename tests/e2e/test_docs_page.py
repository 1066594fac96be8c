"""The /docs page in real headless Chromium against real Gunicorn with API keys on.

The browser signs in with Basic auth (any user, the key as password) as a person would at
its prompt, then Swagger UI fetches /openapi.json with those same credentials and draws every
operation. The page must fetch nothing from anywhere but this server and break no rule of its
Content-Security-Policy.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service.security.keys import create_key
from tests.browser import ARGS, VIEWPORT, chromium_path, open_page
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPO / "var" / "screenshots"


@contextmanager
def signed_in_browser(profile_dir: Path, key: str) -> Iterator:
    """A fresh Chromium profile that answers Basic auth prompts with ``key``."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=executable, headless=True, args=ARGS, viewport=VIEWPORT,
            service_workers="block", timeout=15_000, http_credentials={"username": "docs", "password": key})
        try:
            yield context
        finally:
            context.close()


def keep(page, tmp_path: Path, name: str) -> None:
    """Screenshot the viewport and copy it where people look (``var/`` is git-ignored)."""
    page.screenshot(path=str(tmp_path / name))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / name, SCREENSHOTS / name)


@pytest.fixture
def server(artifact_root, tmp_path, server_factory):
    keys = tmp_path / "keys.json"
    key = create_key(keys, "reader", ["read"])
    return server_factory(artifact_root, API_KEYS_FILE=str(keys)), key


def test_the_docs_page_draws_every_operation_with_keys_on(server, tmp_path):
    server, key = server
    assert server.get("/docs").status_code == 401  # no key, no page: the browser prompts
    spec = server.get("/openapi.json", headers={"X-API-Key": key}).json()
    operations = sum(1 for item in spec["paths"].values() for method in item if method != "parameters")
    with signed_in_browser(tmp_path / "profile", key) as context, open_page(context) as (page, recorder):
        response = page.goto(f"{server.base}/docs")
        assert response.status == 200
        assert "default-src 'none'" in response.headers["content-security-policy"]
        page.locator(".opblock").first.wait_for()
        keep(page, tmp_path, "docs.png")
        assert page.locator(".opblock").count() == operations
        assert page.locator(".opblock-summary-path", has_text="/v1/models/breast-cancer:predict").count() >= 1
        assert page.get_by_text("scikit-learn model server").first.is_visible()
        page.locator(".opblock-summary-path", has_text="/invocations").first.click()
        opened = page.locator(".opblock.is-open")
        opened.locator(".responses-table").first.wait_for()
        assert opened.get_by_text("validation_failed").first.is_visible()  # error responses from the error classes
        assert opened.get_by_text("text/csv").count() >= 1
        models = page.locator("#operations-models-get_v1_models")  # Swagger UI's id: tag and operationId
        models.locator(".opblock-summary").click()
        models.get_by_role("button", name="Try it out").click()
        with page.expect_response(f"{server.base}/v1/models") as called:
            models.get_by_role("button", name="Execute").click()
        assert called.value.status == 200  # "Try it out" carries the same Basic credentials
        status = models.locator(".live-responses-table .response-col_status", has_text="200").first
        status.wait_for()
        status.scroll_into_view_if_needed()
        keep(page, tmp_path, "docs-try-it-out.png")
        assert recorder.console_errors == [] and recorder.page_errors == [] and recorder.failed == []
        assert recorder.foreign(server.base) == []
        assert f"{server.base}/openapi.json" in recorder.requests

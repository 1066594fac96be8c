"""The model card page in real headless Chromium, served by a real WSGI server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from service.models import registry
from tests.api.test_card import package_credit, traffic
from tests.browser import browser_context, chromium_path, open_page
from tests.e2e.test_page import assert_clean, keep

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(make_app, artifact_root) -> Iterator[str]:
    frame = package_credit(artifact_root)
    registry.set_label(artifact_root, "credit", "production", 2, actor="test")
    app = make_app()
    traffic(app, app.test_client(), frame, 2)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_card_page_renders_every_section(served, tmp_path):
    chromium_path()
    with browser_context(tmp_path / "profile") as context, open_page(context) as (page, recorder):
        response = page.goto(f"{served}/v1/models/credit/versions/2/card")
        assert response.status == 200
        assert "default-src 'none'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")
        assert page.title().startswith("credit v2")
        for heading in ("Intended use and limitations", "Input constraints", "Validation", "Since deployment",
                        "Bias by sensitive group", "Global feature importance", "Changes since the parent version"):
            assert page.get_by_role("heading", name=heading).is_visible(), heading
        assert page.get_by_text("<script>alert(1)</script>", exact=False).first.is_visible()  # text, never run
        assert page.get_by_role("row", name="postcode").first.is_visible()
        bars = page.locator("#importance ~ table svg.chart rect")
        assert bars.count() == 4
        box = page.locator("section[aria-labelledby=importance] svg.chart").first.bounding_box()
        assert box and box["width"] > 100
        shot = tmp_path / "card.png"
        page.screenshot(path=str(shot), full_page=True)
        keep(shot, "model-card.png")
    assert_clean(recorder, served)

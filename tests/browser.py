"""Drive Debian's headless Chromium with Playwright, recording what a page does on the network.

Playwright's own browser download (``playwright install``) is not used: the project's setup
installs the ``chromium`` package and we point Playwright at it. Every launch gets a fresh
profile and the flags that keep Chromium from calling home, so the only requests a test sees
are the ones the page makes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Debian's chromium; override with CHROMIUM=/path/to/chrome.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}


@dataclass
class Recorder:
    """What a page logged and fetched while a test drove it."""

    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

        def dismiss(dialog) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", dismiss)

    @property
    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"]

    def foreign(self, origin: str) -> list[str]:
        """Requests that went anywhere but ``origin`` (e.g. ``http://127.0.0.1:8000``)."""
        return [url for url in self.requests if not (url == origin or url.startswith(origin + "/"))]


def chromium_path() -> str:
    """Return the Chromium executable, or fail saying how to install it (never skip: CI must see it)."""
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make system-deps` (apt-get install chromium) or set CHROMIUM")
    return path


@contextmanager
def browser_context(profile_dir: Path) -> Iterator:
    """Yield a Playwright browser context on a fresh Chromium profile in ``profile_dir``."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        # launch_persistent_context owns --user-data-dir; a new directory means a clean profile.
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=executable, headless=True, args=ARGS, viewport=VIEWPORT,
            service_workers="block", timeout=15_000)
        try:
            yield context
        finally:
            context.close()


@contextmanager
def open_page(context) -> Iterator[tuple[object, Recorder]]:
    """Yield a new page in ``context`` with a ``Recorder`` attached."""
    page = context.new_page()
    page.set_default_timeout(10_000)
    recorder = Recorder()
    recorder.attach(page)
    try:
        yield page, recorder
    finally:
        page.close()

"""The README is the front door: short, the two commands, and links into the docs that all lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 150
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_readme_names_the_two_commands():
    readme = README.read_text()
    assert "make serve" in readme and "make test" in readme


def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) <= MAX_LINES


def test_every_link_of_the_readme_leads_to_a_file():
    targets = [target for target, _ in LINK.findall(README.read_text()) if "://" not in target]
    assert targets, "the README links into docs/"
    assert [t for t in targets if not (REPO / t).exists()] == []


def test_the_readme_links_to_the_settings_reference():
    """The settings table lives in the docs, generated from ``Config`` (tests/test_docs.py checks it)."""
    assert "docs/reference/settings.md" in LINK.sub(lambda m: m[1], README.read_text())

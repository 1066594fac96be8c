"""The README's settings table is the one ``Config`` declares: a setting added is a setting documented."""

from __future__ import annotations

from pathlib import Path

from service.cli.settings import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_in_the_readme_with_its_default_and_meaning():
    readme = README.read_text()
    missing = [row for row in settings_table().splitlines()[2:] if row not in readme]
    assert missing == [], "run `python -m service config --markdown` and paste the table into README.md"


def test_the_readme_names_the_two_commands():
    readme = README.read_text()
    assert "make serve" in readme and "make test" in readme

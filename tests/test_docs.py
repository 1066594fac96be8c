"""The documentation site builds strictly, and its reference is the code's own.

``mkdocs build --strict`` fails on a broken link, a page left out of the nav, a bad anchor or a
missing README section; the hooks in docs/hooks/reference.py put the settings (``Config``), every
command's help (the click group) and every HTTP operation (the OpenAPI document) in place of their
placeholders at each build. The build runs in a child process, as ``make docs`` runs it, into a
temporary folder.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from service.config import Config
from service.errors import ServiceError

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
#: Codes of base classes that are only ever raised as one of their subclasses.
BASE_CODES = {"conflict"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return out


def page(site: Path, name: str) -> str:
    return html.unescape((site / name / "index.html").read_text(encoding="utf-8"))


def test_the_site_builds_strictly_with_every_page(site):
    sources = {p.relative_to(DOCS).with_suffix("").as_posix() for p in DOCS.rglob("*.md")}
    built = {p.parent.relative_to(site).as_posix() for p in site.rglob("index.html")} - {"."}
    assert sources - {"index"} <= built


def test_no_placeholder_is_left(site):
    for built in site.rglob("*.html"):
        text = built.read_text(encoding="utf-8")
        assert not any(marker in text for marker in ("settings-table", "cli-reference", "http-operations",
                                                     "--8&lt;--", "--8<--")), built


def test_every_setting_is_on_the_settings_page_with_its_default(site):
    text = page(site, "reference/settings")
    for variable, default, _ in Config.describe():
        assert f"<code>{variable}</code>" in text
        assert html.unescape(default.replace("`", "")) in text, variable


def commands(group: click.Group, path: str = "python -m service") -> Iterator[str]:
    for name, command in sorted(group.commands.items()):
        yield f"{path} {name}"
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {name}")


def test_every_command_has_its_help_on_the_cli_page(site):
    from service.cli import cli

    text = page(site, "reference/cli")
    missing = [path for path in commands(cli) if f"Usage: {path} " not in text]
    assert missing == []


def test_every_operation_of_the_openapi_document_is_on_the_http_page(site):
    spec = json.loads((site / "reference" / "openapi.json").read_text(encoding="utf-8"))
    assert spec["openapi"].startswith("3.1") and len(spec["paths"]) > 30
    text = page(site, "reference/http-api")
    assert [path for path in spec["paths"] if f"<code>{path}</code>" not in text] == []
    assert "<code>/v1/models/{name}:predict</code>" in text


def error_classes(base: type[ServiceError]) -> Iterator[type[ServiceError]]:
    for sub in base.__subclasses__():
        yield sub
        yield from error_classes(sub)


def test_every_error_code_is_in_the_errors_table():
    import service.explain  # noqa: F401  (error classes of their own)
    import service.explain.past  # noqa: F401

    table = (DOCS / "reference" / "errors.md").read_text(encoding="utf-8")
    codes = {cls.code for cls in error_classes(ServiceError)} | {ServiceError.code}
    assert sorted(code for code in codes - BASE_CODES if f"`{code}`" not in table) == []


def test_the_exit_codes_are_on_the_cli_page(site):
    text = page(site, "reference/cli")
    assert "Exit codes, the same for every command" in text

"""The generated reference pages: settings from ``Config``, the command line from the click group,
HTTP operations from the OpenAPI document the app builds.

MkDocs runs these hooks (``hooks:`` in mkdocs.yml) at every build. A page asks for a generated part
with a placeholder comment on a line of its own; the hook puts the part in its place, so the
reference is rebuilt from the code each time and cannot go stale. Nothing is written to the
checkout: the app behind the OpenAPI document runs over an empty registry in a temporary folder.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

REPO = Path(__file__).resolve().parents[2]

#: Where the whole OpenAPI document is published on the site, next to the page that lists it.
OPENAPI_FILE = "reference/openapi.json"
#: Width click formats the help texts to (its default follows the terminal, which a build has not).
HELP_WIDTH = 100
PROG_NAME = "python -m service"
SCOPE = re.compile(r"Needs an API key with the (.+?) scope")
METHODS = ("get", "put", "post", "delete", "patch")
ERROR_CODE = re.compile(r"[a-z][a-z0-9_]*")

_openapi: dict[str, Any] | None = None


# -- MkDocs events ----------------------------------------------------------------------------------

def on_config(config: Any) -> None:
    """Make the project importable: MkDocs loads this file by path, from wherever it runs."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def on_pre_build(config: Any) -> None:
    """Forget the last build's OpenAPI document, so ``mkdocs serve`` rebuilds it after a change."""
    global _openapi
    _openapi = None


def on_files(files: Any, config: Any) -> Any:
    """Publish the OpenAPI document as ``reference/openapi.json``."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, OPENAPI_FILE, content=json.dumps(openapi_document(), indent=2) + "\n"))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put each generated part in place of its placeholder."""
    return render_placeholders(markdown)


# -- the parts --------------------------------------------------------------------------------------

def render_placeholders(markdown: str) -> str:
    """Return ``markdown`` with every placeholder replaced by the part it names."""
    for placeholder, render in PARTS.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, render())
    return markdown


def settings_markdown() -> str:
    """Every setting, its default and meaning: the table ``python -m service config --markdown`` prints."""
    from service.cli.settings import settings_table

    return settings_table()


def cli_markdown() -> str:
    """Every command of the click group, with the help text ``--help`` prints for it."""
    from service.cli import cli

    sections = []
    for ctx in walk_commands(click.Context(cli, info_name=PROG_NAME, max_content_width=HELP_WIDTH,
                                           terminal_width=HELP_WIDTH)):
        depth = ctx.command_path.count(" ") - PROG_NAME.count(" ")  # 0 the group, 1 its commands, 2 subcommands
        heading = "#" * (3 + max(depth - 1, 0))
        sections.append(f"{heading} `{ctx.command_path}`\n\n```text\n{ctx.get_help()}\n```\n")
    return "\n".join(sections)


def walk_commands(ctx: click.Context) -> Iterator[click.Context]:
    """Yield a context for ``ctx``'s command and, depth first, for each of its subcommands by name."""
    yield ctx
    command = ctx.command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk_commands(click.Context(sub, info_name=name, parent=ctx))


def http_markdown() -> str:
    """Every operation of the OpenAPI document, by tag: method, path, scope, what it does, the errors it answers."""
    spec = openapi_document()
    tags = [tag["name"] for tag in spec.get("tags", [])]
    descriptions = {tag["name"]: tag.get("description", "") for tag in spec.get("tags", [])}
    by_tag: dict[str, list[str]] = {}
    for path, item in spec["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            tag = (op.get("tags") or ["other"])[0]
            match = SCOPE.search(op.get("description", ""))
            scope = match[1] if match else "none"
            errors = "; ".join(f"{status}: {_codes(answer.get('description', ''))}"
                               for status, answer in sorted(op["responses"].items()) if not status.startswith("2"))
            by_tag.setdefault(tag, []).append(
                f"| `{method.upper()}` | `{path}` | {scope} | {_cell(op.get('summary', ''))} | {_cell(errors)} |")
    out = []
    for tag in [*tags, *sorted(set(by_tag) - set(tags))]:
        if tag not in by_tag:
            continue
        out.append(f"### {tag}\n\n{descriptions.get(tag, '')}\n\n| method | path | scope | what | errors |\n"
                   "|---|---|---|---|---|\n" + "\n".join(by_tag[tag]) + "\n")
    return "\n".join(out)


def _codes(description: str) -> str:
    """An error response's description with its error codes (``not_found, ...``) as code."""
    return ", ".join(f"`{part}`" if ERROR_CODE.fullmatch(part) else part for part in description.split(", "))


def _cell(text: str) -> str:
    """Text that fits in a Markdown table cell."""
    return " ".join(text.split()).replace("|", "/")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the app serves at ``/openapi.json``, built over an empty registry."""
    global _openapi
    if _openapi is None:
        _openapi = build_openapi()
    return _openapi


def build_openapi() -> dict[str, Any]:
    """Build the app over an empty registry and a database in a temporary folder; return its OpenAPI document."""
    from service.api.openapi import build_spec
    from service.app import create_app
    from service.config import Config

    with tempfile.TemporaryDirectory(prefix="docs-openapi-") as folder:
        tmp = Path(folder)
        (tmp / "artifacts").mkdir()
        config = Config(artifacts_dir=tmp / "artifacts", database_url=f"sqlite:///{tmp / 'store.db'}",
                        local_admin_keys_file=tmp / "local-admin-keys.json", poll_seconds=0, guard_seconds=0,
                        alert_seconds=0, retention_seconds=0, prediction_log_max_rows=0, log_level="error")
        app = create_app(config)
        try:
            return build_spec(app)
        finally:
            app.extensions["observer"].close()
            app.extensions["executor"].shutdown(wait=True)
            app.extensions["store"].close()


PARTS: dict[str, Callable[[], str]] = {
    "<!-- settings-table -->": settings_markdown,
    "<!-- cli-reference -->": cli_markdown,
    "<!-- http-operations -->": http_markdown,
}

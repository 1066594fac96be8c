"""The house rules that keep the request's path readable: Flask stays in the HTTP shell."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVICE = REPO / "service"
HTTP_SHELL = {Path("service/api"), Path("service/app.py")}
WEB_PACKAGES = {"flask", "werkzeug", "jinja2"}


def imported_roots(path: Path) -> set[str]:
    """Every top-level package a module imports, at any depth (lazy imports count too)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def outside_http_shell() -> list[Path]:
    modules = []
    for path in sorted(SERVICE.rglob("*.py")):
        relative = path.relative_to(REPO)
        if not any(relative == shell or shell in relative.parents for shell in HTTP_SHELL):
            modules.append(path)
    return modules


@pytest.mark.parametrize("path", outside_http_shell(), ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_http_shell_imports_flask(path: Path) -> None:
    assert not imported_roots(path) & WEB_PACKAGES, f"{path.relative_to(REPO)} imports a web framework"


def test_the_checker_sees_a_flask_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from flask import g\n    import werkzeug.routing\n")
    assert imported_roots(module) == {"flask", "werkzeug"}


@pytest.mark.parametrize("module", ["service", "service.serving.inference", "service.protocols.v1",
                                    "service.monitoring.observe", "service.cli", "service.store"])
def test_the_core_loads_without_flask(module: str) -> None:
    code = f"import sys, {module}; print('flask' in sys.modules, 'werkzeug' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"], module


def test_the_serving_core_does_not_import_monitoring() -> None:
    """Load counts reach metrics through the catalog's listeners, not an import that points up."""
    for path in sorted((SERVICE / "serving").rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in modules if m.startswith(("service.monitoring", "service.api"))}, path.name

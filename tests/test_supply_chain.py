"""Supply chain: what gets installed is exactly what the lock files pin and hash, and lint guards the code.

requirements.txt and requirements-dev.txt are the pins people edit; `make lock` compiles them into
requirements.lock (the image) and requirements-dev.lock (the virtualenv), where every transitive
dependency is pinned with its hashes. These tests read the files as they are committed: a
requirement without a hash, a pin edited without `make lock`, an install that skips
--require-hashes, or a security finding silenced without a reason fails here.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"requirements.lock": ["requirements.txt"],
             "requirements-dev.lock": ["requirements.txt", "requirements-batch.txt", "requirements-dev.txt"]}
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
#: The shipped code bandit and ruff's S rules read without per-file exceptions (Makefile's BANDIT_TARGETS).
SCANNED = ["service", "bench", "wsgi.py", "gunicorn.conf.py"]


def logical_lines(path: Path) -> list[str]:
    """A requirements file's entries: continuation lines joined, comments and blank lines dropped."""
    entries, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        if pending.strip():
            entries.append(pending.strip())
        pending = ""
    return entries


def pins(path: Path) -> dict[str, str]:
    """Canonical name -> pinned version of every requirement in ``path`` (options like --hash left out)."""
    found = {}
    for entry in logical_lines(path):
        requirement = Requirement(entry.split(" --", 1)[0].strip())
        (spec,) = requirement.specifier  # exactly one: ==version
        assert spec.operator == "==", f"{path.name}: {entry!r} is not pinned with =="
        found[canonicalize_name(requirement.name)] = spec.version
    return found


def hashes(path: Path) -> dict[str, set[str]]:
    return {canonicalize_name(Requirement(entry.split(" --", 1)[0]).name): set(HASH.findall(entry))
            for entry in logical_lines(path)}


def make_rules() -> dict[str, tuple[list[str], list[str]]]:
    """Makefile target -> (prerequisites, recipe lines), for the simple `target: deps` rules."""
    rules: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z$()/._-]+):(?!=)\s*([^#]*)", line)
        if match:
            current = match.group(1)
            rules[current] = (match.group(2).split(), [])
        elif line.startswith("\t") and current:
            rules[current][1].append(line.strip())
        elif line.strip() and not line.startswith("#"):
            current = None
    return rules


def make_variable(name: str) -> list[str]:
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:?=(.*)$", text, re.MULTILINE)
    assert match, f"Makefile has no {name}"
    return shlex.split(match.group(1))


@pytest.mark.parametrize("lock", sorted(TOP_LEVEL))
def test_every_locked_requirement_is_pinned_and_hashed(lock: str) -> None:
    entries = logical_lines(REPO / lock)
    assert len(entries) >= 40
    unhashed = [entry.split(" ", 1)[0] for entry in entries if not HASH.search(entry)]
    assert not unhashed, f"{lock}: no --hash on {unhashed}"
    assert all(entry.split(" ", 1)[0].count("==") == 1 for entry in entries)
    assert pins(REPO / lock)  # every entry parses and is pinned with ==


@pytest.mark.parametrize("lock", sorted(TOP_LEVEL))
def test_every_top_level_pin_is_in_the_lock_at_the_same_version(lock: str) -> None:
    locked = pins(REPO / lock)
    for source in TOP_LEVEL[lock]:
        wanted = pins(REPO / source)
        differ = {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version}
        assert not differ, f"{source} and {lock} disagree (pin, lock); run `make lock`: {differ}"


def test_the_virtualenv_runs_the_image_s_versions_with_the_same_hashes() -> None:
    runtime, dev = hashes(REPO / "requirements.lock"), hashes(REPO / "requirements-dev.lock")
    assert pins(REPO / "requirements.lock").items() <= pins(REPO / "requirements-dev.lock").items()
    assert all(runtime[name] == dev[name] for name in runtime)


def test_the_makefile_installs_only_from_the_locks_with_require_hashes() -> None:
    rules = make_rules()
    locks = make_variable("LOCKS")
    assert sorted(locks) == sorted(TOP_LEVEL)
    assert make_variable("RUNTIME") == ["$(VENV)/.runtime"] and make_variable("DEV") == ["$(VENV)/.installed"]
    runtime_deps, runtime_recipe = rules["$(RUNTIME)"]
    dev_deps, dev_recipe = rules["$(DEV)"]
    # a regenerated lock reinstalls the virtualenv
    assert runtime_deps[0] == "requirements.lock" and dev_deps[0] == "$(LOCKS)"
    installs = [line for recipe in rules.values() for line in recipe[1] if "pip install" in line]
    assert installs and all("--require-hashes" in line for line in installs)
    assert all(re.search(r"-r \S+\.lock\b", line) and not re.search(r"-r \S+\.txt\b", line) for line in installs)
    assert [line for line in runtime_recipe if "pip install" in line][0].endswith("-r requirements.lock")
    assert [line for line in dev_recipe if "pip install" in line][0].endswith("-r requirements-dev.lock")


def test_make_serve_installs_the_runtime_lock_only_and_the_dev_lock_is_for_test_lint_bench() -> None:
    rules = make_rules()
    assert rules["serve"][0] == ["demo"] and rules["demo"][0] == ["$(RUNTIME)"]
    for target in ("list", "verify", "package", "purge", "venv"):
        assert rules[target][0] == ["$(RUNTIME)"], target
    for target in ("lint", "test-fast", "bench", "lock", "dev-venv"):
        assert rules[target][0] == ["$(DEV)"], target
    assert rules["test"][0][0] == "lint"


def test_make_lock_regenerates_both_locks_with_hashes() -> None:
    _, recipe = make_rules()["lock"]
    flags = make_variable("LOCK_FLAGS")
    assert "--generate-hashes" in flags and make_variable("LOCK_PYTHON") == ["3.11"]
    assert make_variable("LOCK_ALSO_FOR") == ["3.12", "3.13"]  # checked to resolve to the same locks
    outputs = [line.split(" -o ", 1)[1].strip() for line in recipe if " -o " in line]
    assert sorted(outputs) == sorted(TOP_LEVEL)
    for line in (line for line in recipe if " -o " in line):
        lock = line.split(" -o ", 1)[1].strip()
        assert all(source in line for source in TOP_LEVEL[lock]) and "uv pip compile" in line
    assert re.search(r"^uv==\S+$", (REPO / "requirements-dev.txt").read_text(), re.MULTILINE)  # the tool is pinned


def test_the_dockerfile_installs_the_runtime_lock_with_require_hashes() -> None:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs and all("--require-hashes" in line and "requirements.lock" in line for line in installs)
    assert "COPY requirements.lock " in text and "requirements.txt" not in text
    assert "!requirements.lock" in (REPO / ".dockerignore").read_text().splitlines()


def test_ci_runs_make_test_which_lints_first() -> None:
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert [c for c in commands if c.startswith("make")] == ["make test"]
    rules = make_rules()
    assert rules["test"][0][0] == "lint"
    lint = " ".join(rules["lint"][1])
    assert "ruff check ." in lint and "bandit" in lint and "--configfile pyproject.toml" in lint
    assert sorted(make_variable("BANDIT_TARGETS")) == sorted(SCANNED)


def test_security_rules_are_on_and_nothing_is_skipped_wholesale() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    lint = config["tool"]["ruff"]["lint"]
    assert "S" in lint["select"] and not any(code.startswith("S") for code in lint.get("ignore", []))
    assert set(lint["per-file-ignores"]) == {"tests/**"}  # shipped code answers each finding at its line
    bandit = config["tool"]["bandit"]
    assert not bandit.get("skips") and not bandit.get("tests")


def scanned_files() -> list[Path]:
    return [path for target in SCANNED for path in sorted((REPO / target).rglob("*.py") if (REPO / target).is_dir()
                                                          else [REPO / target])]


NOSEC = re.compile(r"#\s*nosec\b((?:[\s,]+B\d{3})*)")
NOQA = re.compile(r"#\s*noqa:\s*([A-Z]+\d+(?:[\s,]+[A-Z]+\d+)*)")


def unexplained(line: str) -> bool:
    """True for a line that silences a security rule without naming the rule or without saying why."""
    nosec, noqa = NOSEC.search(line), NOQA.search(line)
    security_noqa = noqa is not None and any(code.startswith("S") for code in re.split(r"[\s,]+", noqa.group(1)))
    if nosec is None and not security_noqa:
        return False
    if nosec is not None and not nosec.group(1).strip():
        return True  # a bare `# nosec` silences every test on the line
    if nosec is not None and not re.match(r"\s*(#|$)", line[nosec.end():]):
        return True  # bandit reads every word up to the next "#" as a test name (and warns about each)
    start = min(match.start() for match in (nosec, noqa) if match is not None)
    reason = NOQA.sub("", NOSEC.sub("", line[start:]))
    return len(re.findall(r"[A-Za-z]{2,}", reason)) < 2


@pytest.mark.parametrize("line, bad", [
    ("import subprocess  # nosec B404  # the bench starts its own Gunicorn", False),
    ('db.execute(sql)  # nosec B608  # noqa: S608  table names are constants', False),
    ("except Exception:  # noqa: S110  counting the failure must not be a second one", False),
    ("import subprocess  # nosec", True),
    ("import subprocess  # nosec B404", True),
    ('db.execute(sql)  # noqa: S608  # nosec B608: constants only', True),
    ('db.execute(sql)  # noqa: S608  # nosec B608  # constants only', False),
    ('db.execute(sql)  # noqa: S608', True),
    ("x = 1  # noqa: E501", False),
])
def test_the_suppression_rule_itself(line: str, bad: bool) -> None:
    assert unexplained(line) is bad


def test_every_inline_suppression_names_its_rule_and_says_why() -> None:
    bare = [f"{path.relative_to(REPO)}:{number}" for path in scanned_files()
            for number, line in enumerate(path.read_text().splitlines(), 1) if unexplained(line)]
    assert not bare, f"security findings silenced without a rule id or a reason (`# nosec B608  # why`): {bare}"

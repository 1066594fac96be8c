"""The package outside the checkout: the wheel built from pyproject.toml, installed in a fresh
virtualenv, gives the `sklearn-server` command (the click group of `python -m service`), whose
`serve` runs Gunicorn with the gunicorn.conf.py the wheel carries and serves a given ARTIFACTS_DIR
from any folder, on CPython 3.11, 3.12 and 3.13 (those this machine has; pyenv's count)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from service.cli import cli
from tests.conftest import REPO, free_port, server_env
from tests.pythons import interpreter

pytestmark = pytest.mark.e2e

UV = Path(sys.executable).parent / "uv"
ROW = [59, 2, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `make wheel` builds: pinned hatchling from the virtualenv, nothing fetched."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(REPO)], check=True, timeout=300)
    (built,) = out.glob("sklearn_server-*.whl")
    return built


def install(wheel: Path, python: str, folder: Path) -> Path:
    """Make a fresh virtualenv (nothing of the checkout's) with the wheel and the dependencies it names;
    return its bin/. uv installs what pip would, from its cache when warm, and compiles the bytecode as pip
    does: otherwise the first `serve` compiles scikit-learn, SciPy and pandas while the test waits for it."""
    venv = folder / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([str(UV), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(venv / "bin" / "python"),
                    str(wheel)], check=True, timeout=900)
    return venv / "bin"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed with the Python running the tests."""
    return install(wheel, sys.executable, tmp_path_factory.mktemp("install"))


@pytest.fixture(scope="module", params=["3.11", "3.12", "3.13"])
def installed_on(request: pytest.FixtureRequest, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed with each supported Python this machine has (every one the README names)."""
    python = interpreter(request.param)
    if python is None:
        pytest.skip(f"no CPython {request.param} here (on PATH or under ~/.pyenv)")
    if python == sys.executable:  # the same interpreter as ``installed``: its virtualenv, not a second one
        return request.getfixturevalue("installed")
    return install(wheel, python, tmp_path_factory.mktemp(f"install-{request.param}"))


def test_the_wheel_carries_the_package_its_files_and_gunicorn_conf(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "service/gunicorn.conf.py" in names and "service/__main__.py" in names
    assert "service/monitoring/default_alerts.toml" in names
    assert any(name.startswith("service/api/templates/") for name in names)
    assert not [name for name in names if name.startswith(("tests/", "bench/", "artifacts/", "wsgi.py"))]
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "sklearn-server = service.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    pinned = {line.split(" #")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    named = {line.removeprefix("Requires-Dist: ") for line in metadata.splitlines() if line.startswith("Requires-Dist:")}
    required = {name for name in named if "; extra ==" not in name}
    assert {name.lower() for name in required} == {name.lower() for name in pinned}  # requirements.txt's pins
    batch = {line.split(" #")[0].strip() for line in (REPO / "requirements-batch.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert "Provides-Extra: batch" in metadata and named - required == {f"{pin}; extra == 'batch'" for pin in batch}


def test_the_console_command_is_the_same_click_group(installed: Path, tmp_path: Path):
    shown = subprocess.run([str(installed / "sklearn-server"), "--help"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Usage: sklearn-server [OPTIONS] COMMAND")
    listed = [line.split()[0] for line in shown.stdout.split("Commands:", 1)[1].splitlines() if line.strip()]
    assert sorted(listed) == sorted(cli.commands)


def test_batch_scoring_without_its_extra_is_one_line_saying_how_to_add_it(installed: Path, tmp_path: Path):
    """pyarrow is the batch extra, not a dependency: the plain install has no pyarrow, and `score` says so."""
    rows = tmp_path / "rows.csv"
    rows.write_text("age\n59\n")
    done = subprocess.run([str(installed / "sklearn-server"), "score", "diabetes", str(rows), str(tmp_path / "out.csv")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and not (tmp_path / "out.csv").exists(), done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: batch scoring needs pyarrow, which the runtime install leaves out: run `make batch` in the checkout, "
        "or pip install 'sklearn-server[batch]'"]


def test_installed_serve_answers_from_any_folder(installed_on: Path, artifact_root: Path, tmp_path: Path):
    """From an empty folder, with only ARTIFACTS_DIR (and a port) given, as a user outside the checkout,
    on each supported Python."""
    installed = installed_on
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    port = free_port()
    env = server_env(artifact_root, port, WEB_CONCURRENCY="1")
    for name in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)  # the defaults: var/ under the folder it runs in
    env["PATH"] = f"{installed}:/usr/bin:/bin"
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(["sklearn-server", "serve"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        output = (tmp_path / "serve.log").read_text()
        assert proc.poll() is None, output
        answer = requests.post(base + "/v1/models/diabetes:predict", json={"instances": [ROW]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "diabetes" and len(answer.json()["predictions"]) == 1
        # the installed code and its own gunicorn.conf.py ran, and the local state is under the folder
        assert f"-c {installed.parent}/lib/python" in output and "/site-packages/service/gunicorn.conf.py" in output
        assert (folder / "var" / "local-admin-keys.json").is_file()
        # keys create with no flag writes where this server reads: a proxied call with the key passes
        created = subprocess.run(["sklearn-server", "keys", "create", "--name", "app", "--scopes", "predict"],
                                 cwd=folder, env=env, capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        proxied = {"X-Forwarded-For": "203.0.113.9"}
        assert requests.post(base + "/v1/models/diabetes:predict", json={"instances": [ROW]}, headers=proxied,
                             timeout=30).status_code == 401
        deadline = time.monotonic() + 10  # the key file is re-read within a second
        while True:
            with_key = requests.post(base + "/v1/models/diabetes:predict", json={"instances": [ROW]},
                                     headers={**proxied, "Authorization": f"Bearer {created.stdout.strip()}"}, timeout=30)
            if with_key.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert with_key.status_code == 200, with_key.text
    finally:
        proc.terminate()  # serve became the Gunicorn master: same pid
        proc.wait(timeout=60)
    assert proc.returncode == 0
    shutil.rmtree(folder / "var", ignore_errors=True)

"""Apache with mod_wsgi (deploy/apache/prediction-server-wsgi.conf) serving wsgi.py as is."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import REPO, SCRUBBED_ENV, free_port
from tests.deploy.conftest import APACHE_MODULES, APACHE_USER, DEPLOY, assert_error_shape, public_dir, render, start_apache

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not (APACHE_MODULES / "mod_wsgi.so").exists(), reason="libapache2-mod-wsgi-py3 missing")]

ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]
VENV = Path(sys.prefix)


def readable_by_apache(path: Path) -> bool:
    return subprocess.run(["runuser", "-u", APACHE_USER, "--", "test", "-r", str(path)]).returncode == 0


def test_mod_wsgi_serves_wsgi_py(demo_root: Path, tmp_path: Path, api_key: tuple[Path, str]):
    if not (readable_by_apache(REPO / "wsgi.py") and readable_by_apache(VENV / "pyvenv.cfg")):
        pytest.skip(f"the checkout or the virtualenv is not readable by {APACHE_USER}, mod_wsgi's daemon account")
    with ExitStack() as stack:
        home = public_dir("ps-wsgi-")
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        shutil.copytree(demo_root, home / "artifacts")
        shutil.copy(api_key[0], home / "keys.json")
        (home / "var" / "metrics").mkdir(parents=True)  # under Gunicorn its master makes it; here the installer does
        shutil.copytree(DEPLOY / "apache" / "errors", home / "errors")
        account = pwd.getpwnam(APACHE_USER)
        for path in [home, *home.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)  # the daemon's account owns var/ and reads the rest

        port = free_port()
        site = render(DEPLOY / "apache" / "prediction-server-wsgi.conf", {
            "<VirtualHost *:80>": f"<VirtualHost 127.0.0.1:{port}>",
            "python-home=/srv/prediction-server/.venv": f"python-home={VENV}",
            "python-path=/srv/prediction-server": f"python-path={REPO}",
            "home=/srv/prediction-server": f"home={home}",
            "user=prediction group=prediction": f"user={APACHE_USER} group={APACHE_USER}",
            "/srv/prediction-server/wsgi.py": f"{REPO}/wsgi.py",
            "<Directory /srv/prediction-server>": f"<Directory {REPO}>",
            "/var/www/prediction-server/errors/": f"{home}/errors/",
        })
        # the app's settings reach the daemon processes through Apache's environment
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.update(ARTIFACTS_DIR=str(home / "artifacts"), DATABASE_URL=f"sqlite:///{home}/var/predictions.db",
                   PROMETHEUS_MULTIPROC_DIR=str(home / "var" / "metrics"), API_KEYS_FILE=str(home / "keys.json"))
        proxy = start_apache(tmp_path / "apache", site, port, ("wsgi",), env=env)
        stack.callback(proxy.stop)
        proxy.session.headers["X-API-Key"] = api_key[1]
        try:
            proxy.wait_ready(timeout=60)
        except AssertionError:
            raise AssertionError(proxy.log("prediction-server-error.log")[-4000:] or proxy.log("error.log")[-4000:]) from None

        response = proxy.post("/v1/models/diabetes:predict", json={"instances": [ROW]},
                              headers={"X-Request-ID": "wsgi-1"})
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == "1" and response.headers["X-Request-ID"] == "wsgi-1"
        assert len(response.json()["predictions"]) == 1
        assert_error_shape(proxy.get("/v1/models/nope"), 404, "model_not_found")
        assert "observation dropped" not in proxy.log("prediction-server-error.log")  # metrics files were writable
        big = b'{"instances": [' + b"[1.0]," * (20 * 1024 * 1024 // 6) + b"[1.0]]}"  # ~20 MB: LimitRequestBody
        error = assert_error_shape(proxy.post("/v1/models/diabetes:predict", data=big,
                                              headers={"Content-Type": "application/json"}), 413, "payload_too_large")
        assert error["details"]["limit_bytes"] == 16 * 1024 * 1024

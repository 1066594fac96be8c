"""The Nginx and Apache tutorials, command by command, on the distribution's packaged servers.

Each test takes the ```bash blocks of docs/tutorials/nginx.md or apache.md and runs them in order,
as one shell script, against a copy of the configuration the Debian package installed
(/etc/nginx with its default site enabled, /etc/apache2 with 000-default): a tutorial that no longer
works on a stock host fails here. Gunicorn runs the way `make serve` runs it (gunicorn.conf.py,
HOST 127.0.0.1), and the packaged server is running with its default site before the tutorial starts.

What differs from the host the tutorial is written for, and why:

- The machine's /etc is never touched: the copy lives in a temporary folder, and the tutorial's
  paths under /etc/nginx, /etc/apache2 and /var/www are pointed there. The copy's own absolute
  paths (Nginx's includes, pid and logs; Apache's envvars: pid, run, lock and log folders) are
  rewritten into the copy too, and the helper commands run on it (``nginx -p/-c``,
  ``APACHE_CONFDIR`` for a2enmod, a2ensite and apache2ctl, as Debian's multi-instance setup does).
- The packaged default site listens on port 80 on every interface, and the shipped site on port 80:
  tests listen on 127.0.0.1 only and run beside other servers, so those listen lines (and nothing
  else in the sites) are rewritten to one free loopback port, and ``http://localhost/`` in the
  tutorial's curl lines to that port.
- Gunicorn listens on a free port rather than 8000, which another server on this host may hold; the
  tutorial's ``127.0.0.1:8000`` is pointed there. The ``make serve`` block is the one command not
  run from the text: the test starts that same Gunicorn itself, so it can stop it by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, Server, free_port, server_env, start_server
from tests.deploy.conftest import APACHE, NGINX, Proxy, _launch, assert_error_shape, public_dir, render

pytestmark = pytest.mark.e2e

TUTORIALS = REPO / "docs" / "tutorials"
PREDICT = "/v1/models/diabetes:predict"
ROW = [50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]


def bash_blocks(tutorial: Path) -> list[str]:
    """The tutorial's ```bash blocks, in order."""
    return re.findall(r"^```bash\n(.*?)^```$", tutorial.read_text(), flags=re.MULTILINE | re.DOTALL)


def rewrite(path: Path, replacements: dict[str, str]) -> None:
    """Edit a file of the copy in place; every ``old`` must occur (``render``'s rule)."""
    path.write_text(render(path, replacements))


def copy_tree(source: Path, dest: Path) -> None:
    """Copy a configuration tree as it is, links included; links into it point into the copy."""
    shutil.copytree(source, dest, symlinks=True)
    for folder, dirs, files in os.walk(dest):
        for name in dirs + files:
            link = Path(folder) / name
            if link.is_symlink() and os.readlink(link).startswith(f"{source}/"):
                target = dest / Path(os.readlink(link)).relative_to(source)
                link.unlink()
                link.symlink_to(target)


@dataclass
class Host:
    """A temporary stand-in for the host: the clone the commands run in, Gunicorn, the proxy's port."""

    root: Path  # the copy's / : etc/nginx, etc/apache2, var/www, log, run ...
    clone: Path
    gunicorn: Server
    env: dict[str, str]
    port: int

    def run_tutorial(self, tutorial: Path, prelude: str, replacements: dict[str, str]) -> str:
        """Run every ```bash block but ``make serve``'s as one script; return its standard output.

        Before the last block (the check), the script waits until the proxy answers /readyz: a reload
        takes effect once the old workers have stopped taking connections, which a person typing the
        next command never notices, and a script a few milliseconds later could.
        """
        blocks = bash_blocks(tutorial)
        assert blocks[0].strip() == "make serve", f"{tutorial.name} no longer starts from make serve: {blocks[0]!r}"
        reloaded = f"timeout 30 bash -c 'until curl -fs http://127.0.0.1:{self.port}/readyz >/dev/null; do sleep 0.1; done'\n"
        script = "".join(blocks[1:-1]) + reloaded + blocks[-1]
        for old, new in replacements.items():
            assert old in script, f"{tutorial.name} no longer contains {old!r}"
            script = script.replace(old, new)
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{prelude}\n{script}"],
            cwd=self.clone,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{tutorial.name} failed:\n{script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout


@pytest.fixture
def host(demo_root: Path, tmp_path: Path) -> Iterator[Host]:
    """The clone (a copy of deploy/, the virtualenv and the code), Gunicorn as `make serve` starts it."""
    root = public_dir("ps-host-")
    clone = root / "clone"
    clone.mkdir()
    shutil.copytree(REPO / "deploy", clone / "deploy")
    (clone / ".venv").symlink_to(REPO / ".venv")
    (clone / "service").symlink_to(REPO / "service")
    for folder in ("log", "run", "lock"):
        (root / folder).mkdir()
    keys_file = tmp_path / "local-admin-keys.json"  # make serve's var/local-admin-keys.json, for this server
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        gunicorn = start_server(demo_root, tmp_path, LOCAL_ADMIN_KEYS_FILE=str(keys_file))
        stack.callback(gunicorn.stop)
        env = server_env(demo_root, gunicorn.port, LOCAL_ADMIN_KEYS_FILE=str(keys_file))
        yield Host(root, clone, gunicorn, env, free_port())


def check_served_through(proxy: Proxy, stdout: str) -> None:
    """The tutorial's own curl lines answered by the app, and the app behind the proxy on its port."""
    assert '"ready"' in stdout and '"predictions"' in stdout, stdout
    assert proxy.get("/readyz").json()["status"] == "ready"
    response = proxy.post(PREDICT, json={"instances": [ROW]})  # no key: through a proxy that is a 401
    error = assert_error_shape(response, 401, "unauthorized")
    assert "predict" in error["message"], error
    assert "diabetes:predict" in proxy.gunicorn.log_path.read_text()


def test_the_nginx_tutorial_on_the_packaged_nginx(host: Host):
    nginx_conf = host.root / "etc" / "nginx" / "nginx.conf"
    copy_tree(Path("/etc/nginx"), host.root / "etc" / "nginx")
    assert (host.root / "etc/nginx/sites-enabled/default").exists(), "the packaged default site is not enabled"
    root = str(host.root)
    rewrite(
        nginx_conf,
        {
            "/etc/nginx/": f"{root}/etc/nginx/",
            "pid /run/nginx.pid;": f"pid {root}/run/nginx.pid;",
            "/var/log/nginx/": f"{root}/log/",
            # the package's temporary folders are under /var/lib/nginx: the copy has its own
            "http {": "http {\n"
            + "".join(
                f"\t{kind}_temp_path {root}/run/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
        },
    )
    rewrite(
        host.root / "etc/nginx/sites-available/default",
        {
            "listen 80 default_server;": f"listen 127.0.0.1:{host.port} default_server;",
            "listen [::]:80 default_server;": "",  # every IPv6 interface: not in a test
        },
    )
    rewrite(host.clone / "deploy/nginx/prediction-server.conf", {"listen 80;": f"listen 127.0.0.1:{host.port};"})
    argv = [NGINX, "-p", f"{root}/", "-e", f"{root}/log/error.log", "-c", str(nginx_conf)]

    proxy = _launch([*argv, "-g", "daemon off;"], host.root / "log", host.port, nginx_conf)
    try:
        proxy.gunicorn = host.gunicorn
        # the packaged default site answers, and knows nothing of the app: the collision the tutorial avoids
        assert proxy.get("/").status_code == 200 and proxy.get("/readyz").status_code == 404
        stdout = host.run_tutorial(
            TUTORIALS / "nginx.md",
            'nginx() { command "$NGINX_BIN" "${NGINX_ARGS[@]}" "$@"; }\n'
            f"NGINX_BIN={NGINX}\nNGINX_ARGS=({' '.join(argv[1:])})",
            {
                "/etc/nginx/": f"{root}/etc/nginx/",
                "127.0.0.1:8000": f"127.0.0.1:{host.gunicorn.port}",
                "http://localhost/": f"http://127.0.0.1:{host.port}/",
            },
        )
        assert not (host.root / "etc/nginx/sites-enabled/default").exists()
        check_served_through(proxy, stdout)
        assert "conflicting server name" not in proxy.log("error.log")
    finally:
        proxy.stop()


def test_the_apache_tutorial_on_the_packaged_apache(host: Host):
    confdir = host.root / "etc" / "apache2"
    copy_tree(Path("/etc/apache2"), confdir)
    assert (confdir / "sites-enabled/000-default.conf").exists(), "the packaged 000-default site is not enabled"
    root = str(host.root)
    rewrite(
        confdir / "envvars",
        {
            "/var/run/apache2$SUFFIX": f"{root}/run",
            "/var/lock/apache2$SUFFIX": f"{root}/lock",
            "/var/log/apache2$SUFFIX": f"{root}/log",
        },
    )
    rewrite(confdir / "ports.conf", {"Listen 80\n": f"Listen 127.0.0.1:{host.port}\n"})
    rewrite(confdir / "sites-available/000-default.conf", {"<VirtualHost *:80>": f"<VirtualHost *:{host.port}>"})
    rewrite(
        host.clone / "deploy/apache/prediction-server.conf",
        {
            "<VirtualHost *:80>": f"<VirtualHost *:{host.port}>",
            "/var/www/prediction-server/": f"{root}/var/www/prediction-server/",
            "http://127.0.0.1:8000/": f"http://127.0.0.1:{host.gunicorn.port}/",
        },
    )
    env = {**host.env, "APACHE_CONFDIR": str(confdir), "APACHE_STATE_DIRECTORY": f"{root}/var/lib/apache2"}
    host.env = env
    start = [
        shutil.which("bash") or "/bin/bash",
        "-c",
        f'. "$APACHE_CONFDIR/envvars" && exec {APACHE} -d "$APACHE_CONFDIR" -DFOREGROUND',
    ]

    proxy = _launch(start, host.root / "log", host.port, confdir / "apache2.conf", env=env)
    try:
        proxy.gunicorn = host.gunicorn
        assert proxy.get("/").status_code == 200 and proxy.get("/readyz").status_code == 404
        stdout = host.run_tutorial(
            TUTORIALS / "apache.md",
            "",
            {
                "/etc/apache2/": f"{root}/etc/apache2/",
                "/var/www/prediction-server": f"{root}/var/www/prediction-server",
                "http://localhost/": f"http://127.0.0.1:{host.port}/",
            },
        )
        assert not (confdir / "sites-enabled/000-default.conf").exists()
        check_served_through(proxy, stdout)
    finally:
        proxy.stop()

"""The Dockerfile and docker-compose.yml, as far as a machine without a container engine can check them.

hadolint lints the Dockerfile. The image's file layout and command are then run for real: the files
the Dockerfile copies are laid out in a folder that is mounted read-only (in a private mount
namespace), tmpfs is mounted where the image expects one, and the image's own CMD and HEALTHCHECK
run as the image's non-root user with the image's environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import REPO, SCRUBBED_ENV, free_port
from tests.deploy.conftest import wait_until

pytestmark = pytest.mark.e2e

HADOLINT = Path(sys.executable).parent / "hadolint"
PROMTOOL = shutil.which("promtool")
VENV = Path(sys.prefix)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            current = named.setdefault(rest.split()[-1], [])
        current.append((keyword, rest))
    return named


def image_env(runtime: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in runtime:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_passes_hadolint():
    result = subprocess.run([str(HADOLINT), "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_image_is_non_root_with_an_exec_form_command_and_a_health_check():
    runtime = stages(REPO / "Dockerfile")["runtime"]
    keywords = dict(runtime)
    user = keywords["USER"].split(":")
    assert all(part.isdigit() and int(part) != 0 for part in user)  # numeric, so runAsNonRoot can check it
    assert json.loads(keywords["CMD"])[0] == "gunicorn"  # exec form: Gunicorn is PID 1 and gets SIGTERM
    assert "/healthz" in keywords["HEALTHCHECK"] and "ENTRYPOINT" not in keywords


def test_the_image_carries_pg_dump_of_the_postgresql_major_the_tests_and_compose_run():
    """`backup` on a PostgreSQL store runs pg_dump in this image (the Kubernetes CronJob), and
    pg_dump refuses a server of a newer major: the client, the tests' server and compose's agree."""
    from tests.postgres import PG_BIN

    runs = " ".join(rest for keyword, rest in stages(REPO / "Dockerfile")["runtime"] if keyword == "RUN")
    clients = re.findall(r"\bpostgresql-client-(\d+)\b", runs)
    assert len(clients) == 1 and "apt-get install" in runs and "rm -rf /var/lib/apt/lists/*" in runs
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    server = re.fullmatch(r"postgres:(\d+)(?:[.-].*)?", compose["services"]["postgres"]["image"])
    assert server and clients[0] == server.group(1) == PG_BIN.parent.name


def test_dockerignore_lets_in_what_the_dockerfile_copies():
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    copied = [src.rstrip("/") for keyword, rest in instructions(REPO / "Dockerfile") if keyword == "COPY"
              and not rest.startswith("--from") for src in rest.split()[:-1]]
    assert copied and set(copied) <= allowed and all((REPO / src).exists() for src in copied)


def build_demo_models(build: list[tuple[str, str]], tree: Path) -> None:
    """Run the build stage's train-demo command as written, in ``tree`` with the image's default store.

    Not a copy of the test's demo models: what the image holds is what that command leaves, and a
    history naming records of a store thrown away with the build would be refused at run time.
    """
    run = next(rest for keyword, rest in build if keyword == "RUN" and "train-demo" in rest)
    command = re.search(r"/opt/venv/bin/python (-m service train-demo[^;]*)", run)
    assert command, run
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    result = subprocess.run([sys.executable, *shlex.split(command.group(1))], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def image_tree() -> Iterator[Path]:
    """What the Dockerfile puts in /app, outside /tmp (which the run below hides under a tmpfs)."""
    if str(VENV).startswith("/tmp/"):
        pytest.skip("the virtualenv lives under /tmp, which the read-only run replaces with a tmpfs")
    closed = next((folder for folder in (REPO, *REPO.parents) if not folder.stat().st_mode & 0o001), None)
    if closed is not None:  # e.g. a checkout under /root (mode 700)
        pytest.skip(f"the checkout is under {closed}, which the image's user (uid 10001) cannot enter")
    tree = Path(tempfile.mkdtemp(prefix="ps-image-", dir="/var/tmp"))
    tree.chmod(0o755)
    build = stages(REPO / "Dockerfile")["build"]
    for keyword, rest in build:
        if keyword == "COPY" and not rest.split()[-1].startswith("/"):  # relative: into WORKDIR /app
            *sources, dest = rest.split()
            for source in sources:
                target = tree / dest / (Path(source).name if dest.endswith("/") and not source.endswith("/") else "")
                if (REPO / source).is_dir():
                    shutil.copytree(REPO / source, tree / dest, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(REPO / source, target)
    build_demo_models(build, tree)
    (tree / "var").mkdir(exist_ok=True)  # the mount point the runtime stage creates
    yield tree
    shutil.rmtree(tree, ignore_errors=True)


# Mount the image folder read-only, tmpfs where the image writes, then become the image's user.
NAMESPACE_SCRIPT = """set -e
mount --bind "$TREE" "$TREE"
mount -o remount,bind,ro "$TREE"
mount -t tmpfs -o uid=$UID_,gid=$GID_,mode=0700,size=64m tmpfs "$TREE/var"
mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm
mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp
cd "$TREE"
exec setpriv --reuid=$UID_ --regid=$GID_ --clear-groups -- "$@"
"""


def test_the_image_command_serves_on_a_read_only_tree_as_non_root(image_tree: Path, api_key: tuple[Path, str],
                                                                   tmp_path: Path):
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare --mount needs CAP_SYS_ADMIN)")
    runtime = stages(REPO / "Dockerfile")["runtime"]
    uid, gid = dict(runtime)["USER"].split(":")
    command = json.loads(dict(runtime)["CMD"])
    health = json.loads(dict(runtime)["HEALTHCHECK"].split(" CMD ", 1)[1])

    shutil.copy(api_key[0], image_tree / "keys.json")  # a secret, mounted read-only in a real run
    (image_tree / "keys.json").chmod(0o644)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    for key, value in image_env(runtime).items():
        env[key] = value.replace("$PATH", os.environ["PATH"]).replace("/opt/venv", str(VENV)).replace(
            "/app", str(image_tree))
    # loopback, not the image's 0.0.0.0: this host is shared
    env.update(HOST="127.0.0.1", PORT=str(port), API_KEYS_FILE=str(image_tree / "keys.json"), TREE=str(image_tree),
               UID_=uid, GID_=gid, REGISTRY_POLL_SECONDS="1")

    with ExitStack() as stack:
        log = stack.enter_context(open(tmp_path / "container.log", "wb"))
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT,
                                 "sh", *command], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        stack.callback(lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "container.log").read_text()[-3000:]
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 60, message="the image's command to answer /readyz")
        predicted = requests.post(f"http://127.0.0.1:{port}/v1/models/diabetes:predict", timeout=30,
                                  json={"instances": [[50, 1, 25.1, 90.0, 180.0, 100.0, 45.0, 4.0, 4.6, 90.0]]},
                                  headers={"X-API-Key": api_key[1]})
        assert predicted.status_code == 200, predicted.text  # the prediction log went to the var/ tmpfs
        assert subprocess.run(health, env=env, timeout=10).returncode == 0  # the image's HEALTHCHECK

        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        assert proc.wait(timeout=40) == 0
    text = (tmp_path / "container.log").read_text()
    assert '"level":"error"' not in text and "Read-only file system" not in text, text[-3000:]


def test_compose_file_wires_the_stack_from_deploy(tmp_path: Path):
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"app", "nginx", "postgres", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
        for config in service.get("configs", []):
            assert config["source"] in compose["configs"]
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"]

    app, nginx = services["app"], services["nginx"]
    assert app["read_only"] and {"/tmp", "/app/var"} <= {mount.split(":")[0] for mount in app["tmpfs"]}
    # Nginx's config, its socket and its address are the ones the app is told about
    assert "./deploy/nginx/prediction-server.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    socket = "unix:/run/prediction-server/gunicorn.sock"
    assert socket in (REPO / "deploy/nginx/prediction-server.conf").read_text()
    assert f"--bind {socket}" in app["environment"]["GUNICORN_CMD_ARGS"]
    assert app["environment"]["FORWARDED_ALLOW_IPS"] == nginx["networks"]["backend"]["ipv4_address"]
    assert app["environment"]["DATABASE_URL"].startswith("postgresql://")

    # Prometheus: the inline config with deploy/prometheus's rules is one promtool accepts
    (tmp_path / "prometheus.yml").write_text(compose["configs"]["prometheus_config"]["content"])
    shutil.copy(REPO / "deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
    if PROMTOOL:
        result = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    scrape = yaml.safe_load(compose["configs"]["prometheus_config"]["content"])["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["app:8000"]
    # Grafana: the provisioned datasource's uid is what the dashboard's input is rewritten to
    datasource = yaml.safe_load(compose["configs"]["grafana_datasource"]["content"])["datasources"][0]
    assert f"/{datasource['uid']}/g" in " ".join(services["grafana-dashboard"]["command"])
    assert "${DS_PROMETHEUS}" in (REPO / "deploy/grafana/dashboard.json").read_text()

"""Tiny real artifacts for unit tests: one fitted model, packaged into a root in ``tmp_path``."""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from sklearn.linear_model import LogisticRegression

from service.models import artifacts, registry
from service.models.packaging import package_model


@functools.cache
def fitted() -> tuple[LogisticRegression, pd.DataFrame, pd.Series]:
    """A logistic regression on six rows, fitted once per test session."""
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    y = pd.Series([0, 0, 0, 1, 1, 1])
    return LogisticRegression().fit(X, y), X, y


def package(root: Path, name: str = "m", signing_key: str | None = None, *, record: bool = False) -> dict[str, Any]:
    """Package the tiny model as the next version of ``name``; ``record`` also writes the history."""
    model, X, y = fitted()
    manifest = package_model(model, name, root, X, y, signing_key=signing_key)
    if record:
        registry.record_packaged(root, manifest, actor="test")
    return manifest


T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Call ``condition`` until it returns something truthy and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} still false after {timeout} s (last value {value!r})")
        time.sleep(interval)
    return value


def copy_version(root: Path, name: str, source: int, target: int) -> Path:
    """Copy version ``source`` of ``name`` as version ``target`` (same model, its manifest renumbered)."""
    folder = artifacts.version_dir(root, name, target)
    shutil.copytree(artifacts.version_dir(root, name, source), folder)
    manifest = artifacts.read_manifest(folder)
    manifest["version"] = target
    os.chmod(folder / artifacts.MANIFEST, 0o644)
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    return folder


def flip_byte(path: Path, offset: int | None = None, mask: int = 0xFF) -> None:
    """Corrupt one byte of a (read-only) artifact file, in the middle unless ``offset`` says where."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= mask
    path.write_bytes(bytes(data))


def race(target: Any, args: tuple, processes: int = 4, timeout: float = 20.0) -> list[Any]:
    """Fork ``processes`` children that wait on one barrier, then run ``target(barrier, results, *args)``.

    Returns what each child put on ``results``; fails if a child did not exit cleanly.
    """
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=target, args=(barrier, results, *args)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    return outcomes


def load_gunicorn_conf(monkeypatch, **env: str):
    """Execute gunicorn.conf.py as Gunicorn would, with only ``env`` set of the server's settings."""
    import importlib.util

    from tests.conftest import REPO, SCRUBBED_ENV

    for name in SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", REPO / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def fake_gunicorn_server(host: str, worker_class: Any = "sync") -> tuple[Any, list[tuple[str, str]]]:
    """A stand-in for Gunicorn's arbiter with one listener on ``host`` (tests may bind loopback only),
    a log that keeps (level, message) pairs and ``worker_class`` (a class, or a name Gunicorn knows)."""
    from gunicorn.config import Config as GunicornConfig

    lines: list[tuple[str, str]] = []
    cfg = GunicornConfig()
    cfg.set("worker_class", worker_class)

    class Log:
        def warning(self, message, **_):
            lines.append(("warning", message))

        def error(self, message, **_):
            lines.append(("error", message))

    class Listener:
        class sock:  # noqa: N801
            @staticmethod
            def getsockname():
                return (host, 8000)

        def __str__(self):
            return f"{host}:8000"

    return type("Server", (), {"LISTENERS": [Listener()], "log": Log(), "cfg": cfg})(), lines


def package_with_subject(root: Path, name: str = "people") -> dict[str, Any]:
    """Package a model whose rows are about people: ``customer_id`` (a pii string the model ignores)
    is declared the manifest's ``subject``, written by hand as packaging's ``--subject`` writes it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline

    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "customer_id": [f"c{i}" for i in range(6)]})
    y = pd.Series([0, 0, 0, 1, 1, 1])
    model = make_pipeline(ColumnTransformer([("x", "passthrough", ["x"])]), LogisticRegression()).fit(X, y)
    manifest = package_model(model, name, root, X, y)
    folder = artifacts.version_dir(root, name, manifest["version"])
    for feature in manifest["input"]["features"]:
        if feature["name"] == "customer_id":
            feature.update(type="string", pii=True, nullable=False)
            feature.pop("categories", None)
    manifest["subject"] = "customer_id"
    os.chmod(folder / artifacts.MANIFEST, 0o644)
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    registry.set_label(root, name, "production", manifest["version"], actor="test")
    return manifest


def logged_ids(db: Any, model: str | None = None) -> list[str]:
    """Every prediction id the log holds, expanded from its batch records (``db``: a Store or a sqlite3
    connection), oldest record first."""
    import orjson

    from service.store.records import ids_of

    sql = "SELECT base, rows, positions FROM prediction_batches"
    params: tuple = ()
    if model is not None:
        sql, params = sql + " WHERE model = ?", (model,)
    found = db.fetch(sql + " ORDER BY ts, batch", params) if hasattr(db, "fetch") else db.execute(sql, params).fetchall()
    return [pid for base, rows, positions in found
            for pid in ids_of(base, rows, None if positions is None else orjson.loads(positions))]

"""PMML export: convert a fitted model with sklearn2pmml and prove a PMML evaluator answers like it.

Packaging calls ``export`` when asked (``package --pmml``); ``exporting`` hands the stored file
out. The converter (sklearn2pmml, JPMML-SkLearn) and the evaluator (jpmml_evaluator, JPMML-
Evaluator) both run Java in a child process; neither is part of the server, which never reads
the PMML file. ``export`` never raises for a model it cannot convert or whose PMML misses
parity: its report says why in one line, and then no file is kept. It writes nothing into the
registry (packaging does). No Flask here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import shutil
import subprocess  # nosec B404  # only to stop the evaluator's Java process
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PMML_FILE = "model.pmml"
OK, FAILED, UNSUPPORTED = "ok", "failed", "unsupported"
#: Parity: classes identical, every probability and regression value within ATOL (absolute).
ATOL = 1e-9
#: Probe rows scored besides the hold-out at most.
MAX_PROBES = 5_000
#: On a failed conversion the converter posts the exception and the library versions to
#: telemetry.jpmml.org. With an empty hosts file the JVM resolves no name, so that report never
#: leaves the machine; converting needs no network.
CONVERTER_JAVA_OPTS = ("-Djdk.net.hosts.file=/dev/null",)
#: The converter's one-line diagnosis: its exception banner, then the class and the message.
JAVA_EXCEPTION_RE = re.compile(r"^(?:[\w$]+\.)+[\w$]*(?:Exception|Error): (.+)$", re.MULTILINE)
JAVA_HINT_RE = re.compile(r"^Solution:\s*\n\s+(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Export:
    """The outcome of one conversion: the report for the manifest and, when parity held, the PMML bytes."""

    report: dict[str, Any]
    data: bytes | None = None


class Refused(Exception):
    """The converter could not turn this model into PMML; the message says why in one line."""


def export(model: Any, X: pd.DataFrame, features: list[dict[str, Any]], task: str) -> Export:
    """Convert ``model`` and check the PMML against the model on the hold-out rows ``X`` and probes built from the model."""
    try:
        import jpmml_evaluator  # noqa: F401  (the parity check needs it: refuse early, before converting)
        import sklearn2pmml  # noqa: F401
    except ImportError as exc:
        return Export(_report(UNSUPPORTED, reason=f"{exc.name} is not installed (it is in requirements-dev.txt)"))
    java = java_path()
    if java is None:
        return Export(_report(UNSUPPORTED, reason="java is not installed (make system-deps installs a JRE)"))
    libraries = {name: metadata.version(name) for name in ("sklearn2pmml", "jpmml_evaluator")}
    names = [f["name"] for f in features]
    try:
        data = convert(model, names, java)
    except Refused as exc:
        return Export(_report(UNSUPPORTED, reason=str(exc), libraries=libraries))
    rows = with_probes(model, X, features)
    try:
        with evaluator(java) as backend:
            libraries["java"] = java_version(backend)
            report = {**check_parity(backend, data, model, rows, names, task),
                      "holdout_rows": len(X), "probe_rows": len(rows) - len(X)}
    except Exception as exc:  # the evaluator refused the file or died: never fail packaging
        report = _report(FAILED, reason=f"PMML evaluator: {type(exc).__name__}: {_short(exc)}")
    return Export({**report, "libraries": libraries}, data if report["status"] == OK else None)


def with_probes(model: Any, X: pd.DataFrame, features: list[dict[str, Any]]) -> pd.DataFrame:
    """The hold-out plus the probes the ONNX parity uses (split thresholds and one ulp either side,
    large magnitudes, missing values), at most ``MAX_PROBES`` of them, spread evenly: the evaluator
    scores every row in one Java process, and a forest has tens of thousands of splits."""
    from service.models.parity_probes import probes

    extra, _ = probes(model, X, features)
    if len(extra) > MAX_PROBES:
        extra = extra.iloc[np.linspace(0, len(extra) - 1, MAX_PROBES).round().astype(int)]
    return pd.concat([X, extra], ignore_index=True) if len(extra) else X


def java_path() -> str | None:
    """Find the ``java`` both Java tools will run: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return candidate if candidate and os.access(candidate, os.X_OK) else None


def java_version(backend: Any) -> str:
    """Name the Java runtime an evaluator runs on (e.g. ``Debian 17.0.15+6-Debian-1deb12u1``)."""
    system = backend.gateway.jvm.java.lang.System
    return f"{system.getProperty('java.vendor')} {system.getProperty('java.runtime.version')}"


def convert(model: Any, names: list[str], java: str) -> bytes:
    """Return the PMML document for ``model``, whose inputs are the features ``names``, in order.

    Raises ``Refused`` with the converter's own one-line reason (an estimator it does not know,
    a scikit-learn release it does not support, an expired converter).
    """
    from sklearn2pmml import make_pmml_pipeline, sklearn2pmml

    # sklearn2pmml rewrites the estimator it is given in place: convert a copy, package the original
    pipeline = make_pmml_pipeline(copy.deepcopy(model), active_fields=names, target_fields=[target_name(names)])
    printed = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="pmml-") as folder:
        out = Path(folder) / PMML_FILE
        try:
            # it prints Java's log and an advertisement to stdout: kept for the reason, shown to no one
            with contextlib.redirect_stdout(printed), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pickling warnings concern the copy; parity decides
                sklearn2pmml(pipeline, str(out), java_home=_java_home(java), java_opts=list(CONVERTER_JAVA_OPTS))
        except Exception as exc:  # it raises RuntimeError for Java's failures, others for what it cannot pickle
            raise Refused(java_reason(printed.getvalue()) or f"sklearn2pmml: {type(exc).__name__}: {_short(exc)}") from None
        if not out.is_file():
            raise Refused("sklearn2pmml wrote no PMML file")
        return out.read_bytes()


def java_reason(output: str) -> str | None:
    """Pick the converter's diagnosis out of its log: the exception's message and its suggested fix."""
    found = JAVA_EXCEPTION_RE.search(output)
    if found is None:
        return None
    hint = JAVA_HINT_RE.search(output, found.end())
    reason = found.group(1).strip()
    if hint and "custom" not in hint.group(1):  # "develop a custom converter" helps no one packaging a model
        reason += f" ({hint.group(1).strip()})"
    return _short(reason, 300)


def target_name(names: list[str]) -> str:
    """Name the PMML target field: ``y``, unless a feature is called that."""
    name = "y"
    while name in names:
        name += "_"
    return name


@contextlib.contextmanager
def evaluator(java: str) -> Iterator[Any]:
    """Start a JPMML-Evaluator in its own Java process for the block; stop it after.

    jpmml_evaluator's own Py4J start-up leaves that process running after Python exits and lets
    any local user drive it over its port; this one needs the token it was started with and dies
    with its parent.
    """
    from jpmml_evaluator import _package_classpath  # the evaluator's own jars
    from jpmml_evaluator.py4j import Py4JBackend
    from py4j.java_gateway import JavaGateway

    # its errors come back as exceptions: its log (stdout, stderr) goes to /dev/null
    gateway = JavaGateway.launch_gateway(classpath=os.pathsep.join(_package_classpath()), java_path=java,
                                         die_on_exit=True, enable_auth=True)
    try:
        yield Py4JBackend(gateway)
    finally:
        gateway.shutdown()  # closes the connections; the Java process keeps running until its stdin closes
        process = gateway.java_process
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_parity(backend: Any, data: bytes, model: Any, X: pd.DataFrame, names: list[str], task: str) -> dict[str, Any]:
    """Score ``X`` with the PMML document and with ``model``; report the largest absolute difference."""
    from jpmml_evaluator import make_evaluator

    pmml = make_evaluator(data, backend=backend).verify()
    results = pmml.evaluateAll(_arguments(X[names]))
    rows = {"rows": len(X)}
    errors = results["errors"].dropna() if "errors" in results else pd.Series(dtype=str)
    if len(errors):
        return _report(FAILED, reason=f"the PMML evaluator refused {len(errors)} of {len(X)} hold-out and probe rows: "
                                      f"{_short(errors.iloc[0])}", **rows)
    frame = X[names] if hasattr(model, "feature_names_in_") else X[names].to_numpy()
    target = target_name(names)
    if task == "classification":
        return _check_classes(model, frame, results, target, rows)
    expected = np.asarray(model.predict(frame), dtype=np.float64)
    got = results[target].to_numpy(dtype=np.float64)
    return _within(got, expected, "predictions", rows)


def _check_classes(model: Any, frame: Any, results: pd.DataFrame, target: str, rows: dict[str, int]) -> dict[str, Any]:
    expected = np.asarray(model.predict(frame))
    # the evaluator answers in the PMML's types (int, float, str): compare as text, like for like
    wrong = int(np.count_nonzero(results[target].astype(str).to_numpy() != expected.astype(str)))
    if wrong:
        return _report(FAILED, reason=f"{wrong} of {len(expected)} predicted classes differ", **rows)
    if not hasattr(model, "predict_proba"):
        return _report(OK, max_abs_diff=0.0, **rows)
    # JPMML-SkLearn writes one probability output per class, in the order of classes_
    columns = [c for c in results.columns if str(c).startswith("probability(")]
    if len(columns) != len(model.classes_):
        return _report(FAILED, reason=f"the PMML gives {len(columns)} probabilities for {len(model.classes_)} classes", **rows)
    return _within(results[columns].to_numpy(dtype=np.float64), np.asarray(model.predict_proba(frame), dtype=np.float64),
                   "probabilities", rows)


def _within(got: np.ndarray, expected: np.ndarray, what: str, rows: dict[str, int]) -> dict[str, Any]:
    got = got.reshape(expected.shape)
    if not np.array_equal(np.isnan(got), np.isnan(expected)):
        return _report(FAILED, reason=f"{what}: one side has missing values where the other has numbers", **rows)
    diff = float(np.nanmax(np.abs(got - expected), initial=0.0))
    if diff > ATOL:
        # rounding alone differs by more than ATOL once values pass about 1e6: say how large they are
        scale = float(np.nanmax(np.abs(expected), initial=0.0))
        return _report(FAILED, reason=f"{what} differ by {diff:.3g} (more than {ATOL:g}, on values up to {scale:.3g})",
                       max_abs_diff=diff, **rows)
    return _report(OK, max_abs_diff=diff, **rows)


def _arguments(X: pd.DataFrame) -> pd.DataFrame:
    """Hand the evaluator plain Python values (it unpickles them in Java): None for every kind of missing."""
    def plain(value: Any) -> Any:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return None
        return value.item() if isinstance(value, np.generic) else value

    return pd.DataFrame({name: pd.Series([plain(v) for v in X[name]], index=X.index, dtype=object) for name in X.columns})


def _java_home(java: str) -> str | None:
    # sklearn2pmml runs `java` from PATH unless it is given a home: give it the one java_path chose
    return str(Path(java).parent.parent) if os.environ.get("JAVA_HOME") else None


def _report(status: str, *, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"status": status, "reason": reason, **extra}


def _short(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."

"""ONNX export: convert a fitted model with skl2onnx and prove it answers like the original.

Packaging calls ``export``; serving calls ``session``, ``Inputs`` and ``decode_labels``, the
same code the parity check ran, so what passed at packaging is what runs. ``export`` never
raises for a model it cannot convert or that misses parity: its report says why, and joblib
serves. It never writes files (packaging does). No Flask here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

ONNX_FILE = "model.onnx"
OK, FAILED, UNSUPPORTED = "ok", "failed", "unsupported"
#: Parity tolerances: classes identical, probabilities within PROBA_ATOL (absolute),
#: regression within REGRESSION_RTOL of the largest hold-out prediction's magnitude (an
#: element-wise ratio would judge values near zero by their rounding noise).
PROBA_ATOL = 1e-5
REGRESSION_RTOL = 1e-6
#: One input tensor of all features (fastest), or one input per feature (needed for string
#: features and for column transformers that select by name).
MATRIX, COLUMNS = "matrix", "columns"
LAYOUTS = (MATRIX, COLUMNS)
#: Double first, for exact parity; float for tree ensembles and whatever only converts in float.
DTYPES = {"double": np.float64, "float": np.float32}
TREE_OPS = {"TreeEnsembleClassifier", "TreeEnsembleRegressor"}


@dataclass(frozen=True)
class Export:
    """The outcome of one conversion: the report for the manifest and, if any, the ONNX bytes."""

    report: dict[str, Any]
    data: bytes | None = None


def export(model: Any, X: pd.DataFrame, features: list[dict[str, Any]], task: str) -> Export:
    """Convert ``model`` and check it against itself on the hold-out rows ``X``."""
    try:
        import onnx
        import skl2onnx

        onnxruntime = import_onnxruntime()
    except ImportError as exc:
        return Export(_report(UNSUPPORTED, reason=f"{exc.name} is not installed"))
    libraries = {"skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    result = _export(model, X, features, task)
    return Export({**result.report, "libraries": libraries}, result.data)


def _export(model: Any, X: pd.DataFrame, features: list[dict[str, Any]], task: str) -> Export:
    named = hasattr(model, "feature_names_in_")
    numeric = all(_is_numeric(f) for f in features)
    layouts = ([MATRIX] if numeric else []) + ([COLUMNS] if named else [])
    if not layouts:
        return Export(_report(UNSUPPORTED, reason="string features on a model fitted without column names"))
    failure: Export | None = None
    reasons = []
    for layout in layouts:
        converted = []
        for dtype in DTYPES:
            spec = {"layout": layout, "input_dtype": dtype}
            try:
                converted.append((spec, *_convert(model, features, spec, task)))
            except Exception as exc:  # skl2onnx raises many types for what it cannot convert
                reasons.append(f"{layout}/{dtype}: {type(exc).__name__}: {_short(exc)}")
        # scikit-learn's trees cast inputs to float32 and so do these ops given float inputs;
        # given double ones they compare against float-rounded thresholds and disagree more often
        converted.sort(key=lambda c: c[2] and c[0]["input_dtype"] == "double")
        for spec, data, _trees in converted:
            try:
                result = check_parity(model, data, X, features, spec, task)
            except Exception as exc:  # e.g. outputs shaped unlike the estimator's: never fail packaging
                result = Export(_report(FAILED, reason=f"parity check: {type(exc).__name__}: {_short(exc)}", **spec))
            if result.report["status"] == OK:
                return result
            # a parity miss (whose bytes are kept, for MODEL_BACKEND=onnx) says more than a crash
            if failure is None or (failure.data is None and result.data is not None):
                failure = result
    return failure or Export(_report(UNSUPPORTED, reason="; ".join(reasons)))


def _convert(model: Any, features: list[dict[str, Any]], spec: dict[str, Any], task: str) -> tuple[bytes, bool]:
    """Return the ONNX bytes and whether they hold tree ensembles."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    number = DoubleTensorType if spec["input_dtype"] == "double" else FloatTensorType
    if spec["layout"] == MATRIX:
        types = [("X", number([None, len(features)]))]
    else:
        types = [(f["name"], number([None, 1]) if _is_numeric(f) else StringTensorType([None, 1])) for f in features]
    options = {"zipmap": False} if task == "classification" else None
    with warnings.catch_warnings():
        # converter warnings concern its own internals; the parity check is what decides
        warnings.simplefilter("ignore")
        proto = to_onnx(model, initial_types=types, options=options)
    return proto.SerializeToString(), bool({n.op_type for n in proto.graph.node} & TREE_OPS)


def check_parity(model: Any, data: bytes, X: pd.DataFrame, features: list[dict[str, Any]],
                 spec: dict[str, Any], task: str) -> Export:
    """Run the ONNX bytes and the estimator on the same rows and compare their answers."""
    columns = {f["name"]: X[f["name"]].to_numpy() for f in features}
    try:
        runner = session(data)
        inputs = Inputs.of(features, spec, runner)
        usable = ~inputs.missing_strings(columns)  # those rows are joblib's to answer when served
        details = {**spec, "rows": int(usable.sum())}
        outputs = runner.run(None, inputs.feeds({name: values[usable] for name, values in columns.items()}))
    except Exception as exc:  # onnxruntime refuses some converter output (type mismatches)
        return Export(_report(FAILED, reason=f"onnxruntime: {type(exc).__name__}: {_short(exc)}", **spec))
    if not usable.any():
        return Export(_report(FAILED, reason="no hold-out row without a missing string to compare on", **details))
    frame = X[usable] if hasattr(model, "feature_names_in_") else X[usable].to_numpy()
    if task == "classification":
        return _check_classes(model, data, outputs, frame, details)
    expected = np.asarray(model.predict(frame), dtype=np.float64)
    got = regression_values(outputs[0]).reshape(expected.shape)
    diff = float(np.max(np.abs(got - expected), initial=0.0))
    scale = float(np.max(np.abs(expected), initial=0.0)) or 1.0
    ok = bool(np.isfinite(got).all() == np.isfinite(expected).all()) and diff <= REGRESSION_RTOL * scale
    reason = None if ok else f"regression differs by {diff:.3g} (more than {REGRESSION_RTOL:g} x {scale:.3g})"
    return Export(_report(OK if ok else FAILED, reason=reason, max_abs_diff=diff, max_rel_diff=diff / scale,
                          **details), data)


def _check_classes(model: Any, data: bytes, outputs: list[Any], frame: Any, details: dict[str, Any]) -> Export:
    expected = np.asarray(model.predict(frame))
    try:
        got = decode_labels(outputs[0], np.asarray(model.classes_))
    except ValueError as exc:
        return Export(_report(FAILED, reason=str(exc), **details))
    if not np.array_equal(got, expected):
        wrong = int(np.count_nonzero(got != expected))
        return Export(_report(FAILED, reason=f"{wrong} of {len(expected)} predicted classes differ", **details), data)
    diff = 0.0
    if hasattr(model, "predict_proba") and len(outputs) > 1:
        proba = np.asarray(outputs[1], dtype=np.float64)
        diff = float(np.max(np.abs(proba - model.predict_proba(frame)), initial=0.0))
    if diff > PROBA_ATOL:
        return Export(_report(FAILED, reason=f"probabilities differ by {diff:.3g} (more than {PROBA_ATOL:g})",
                              max_abs_diff=diff, **details), data)
    return Export(_report(OK, max_abs_diff=diff, **details), data)


def import_onnxruntime() -> Any:
    """Import ONNX Runtime with its usage telemetry off unless the operator turned it on.

    Left on, importing it starts an uploader thread that sends usage data to its vendor (a
    prediction server has no business doing that) and, imported before a fork, aborts the forked
    process at exit. Gunicorn's config sets the same default for the master; this covers every
    other entry point (the CLI, waitress, mod_wsgi).
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def session(data: bytes) -> Any:
    """Create an ONNX Runtime session tuned for one request at a time in one worker process."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    # workers are the unit of parallelism: a thread pool per session would oversubscribe the CPU
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle pool threads spinning for work burn CPU that the next request needs
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: warnings would go to stderr, not our logs
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Inputs:
    """How validated columns become a session's inputs; built once per loaded version."""

    layout: str
    dtype: type
    features: tuple[str, ...]  # schema order
    numeric: tuple[bool, ...]  # per feature: a number tensor, else a string tensor
    names: tuple[str, ...]  # the session's input names, in declared order

    @classmethod
    def of(cls, features: list[dict[str, Any]], spec: dict[str, Any], session: Any) -> Inputs:
        names = tuple(i.name for i in session.get_inputs())
        expected = 1 if spec["layout"] == MATRIX else len(features)
        if len(names) != expected:
            raise ValueError(f"the ONNX model takes {len(names)} inputs, {expected} expected")
        return cls(spec["layout"], DTYPES[spec["input_dtype"]], tuple(f["name"] for f in features),
                   tuple(_is_numeric(f) for f in features), names)

    def missing_strings(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Flag the rows with a null in a string feature (joblib answers those: a string tensor has no null)."""
        flags = np.zeros(len(columns[self.features[0]]), dtype=bool)
        for name, numeric in zip(self.features, self.numeric, strict=True):
            if not numeric:
                flags |= pd.isna(columns[name])
        return flags

    def feeds(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Shape validated columns into the session's inputs."""
        if self.layout == MATRIX:
            return {self.names[0]: np.column_stack([np.asarray(columns[name], dtype=self.dtype) for name in self.features])}
        # by position: skl2onnx rewrites names that are not legal ONNX identifiers ("mean radius")
        return {input_name: np.asarray(columns[name], dtype=self.dtype if numeric else object).reshape(-1, 1)
                for input_name, name, numeric in zip(self.names, self.features, self.numeric, strict=True)}


def regression_values(output: Any) -> np.ndarray:
    """Shape an ONNX regression output like scikit-learn's: (n,) for one target, (n, k) for k."""
    values = np.asarray(output, dtype=np.float64)
    return values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values


def decode_labels(labels: Any, classes: np.ndarray) -> np.ndarray:
    """Map ONNX labels back to the estimator's own classes, with their dtype."""
    labels = np.asarray(labels).reshape(-1)
    try:
        # scikit-learn keeps classes_ sorted (np.unique): a binary search finds them cheaply
        index = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
        found = bool((classes[index] == labels).all())
    except TypeError:  # labels and classes of types that do not compare
        found = False
    if not found:
        index = pd.Index(classes).get_indexer(labels)
        if (index < 0).any():
            raise ValueError("the ONNX model predicted a label that is not one of the model's classes")
    return classes[index]


def _is_numeric(feature: dict[str, Any]) -> bool:
    """Whether the model was fitted on numbers here (the pandas dtype, not the schema type)."""
    dtype = feature.get("dtype")
    if dtype is None:
        return feature["type"] in ("float", "int", "bool")
    try:
        return pd.api.types.is_numeric_dtype(pd.api.types.pandas_dtype(dtype)) or dtype in ("bool", "boolean")
    except TypeError:
        return False


def _report(status: str, *, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"status": status, "reason": reason, **extra}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."

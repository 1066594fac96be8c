"""ONNX export: convert a fitted model and prove it answers exactly like the original.

Tree ensembles convert with ``onnx_trees`` (double thresholds and leaves), everything else with
skl2onnx, in double where it converts. Parity (``parity``) is checked on the hold-out and on
probes built from the model (``parity_probes``); only a graph within ``parity.TOLERANCE`` on
every output passes. Packaging calls ``export``; serving calls ``session``, ``Inputs`` and
``decode_labels``, the same code the parity check ran, so what passed at packaging is what runs.
``export`` never raises for a model it cannot convert or that misses parity: its report says
why, and joblib serves. It never writes files (packaging does). No Flask here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.models import parity

if TYPE_CHECKING:
    import pandas as pd

ONNX_FILE = "model.onnx"
OK, FAILED, UNSUPPORTED = "ok", "failed", "unsupported"
#: One input tensor of all features (fastest), or one input per feature (needed for string
#: features and for column transformers that select by name).
MATRIX, COLUMNS = "matrix", "columns"
LAYOUTS = (MATRIX, COLUMNS)
#: Double graphs are the ones that can answer exactly; a float graph is kept only when no double
#: one converts, for an operator who forces MODEL_BACKEND=onnx knowing its measured deviation.
DTYPES = {"double": np.float64, "float": np.float32}
#: Which builder made the graph: ours for tree ensembles (``onnx_trees``), else skl2onnx.
TREES, SKL2ONNX = "tree_ensemble", "skl2onnx"


@dataclass(frozen=True)
class Export:
    """The outcome of one conversion: the report for the manifest and, if any, the ONNX bytes."""

    report: dict[str, Any]
    data: bytes | None = None


def export(model: Any, X: pd.DataFrame, features: list[dict[str, Any]], task: str) -> Export:
    """Convert ``model`` and check it against itself on the hold-out rows ``X`` and on probes."""
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
    rows: tuple[pd.DataFrame, np.ndarray] | None = None  # built once, for the first graph that converts
    best: Export | None = None
    reasons = []
    for layout in layouts:
        for spec in _specs(model, layout):
            if spec["input_dtype"] == "float" and best is not None and best.data is not None:
                break  # a double graph that converted and missed: a float one would only be further off
            try:
                data = _convert(model, features, spec, task)
            except Exception as exc:  # converters raise many types for what they cannot convert
                reasons.append(f"{layout}/{spec['input_dtype']}/{spec['graph']}: {type(exc).__name__}: {_short(exc)}")
                continue
            try:
                rows = rows or check_rows(model, X, features)
                result = check_parity(model, data, rows, features, spec, task)
            except Exception as exc:  # e.g. outputs shaped unlike the estimator's: never fail packaging
                result = Export(_report(FAILED, reason=f"parity check: {type(exc).__name__}: {_short(exc)}", **spec))
            if result.report["status"] == OK:
                return result
            if _better(result, best):
                best = result
    return best or Export(_report(UNSUPPORTED, reason="; ".join(reasons)))


def _specs(model: Any, layout: str) -> list[dict[str, Any]]:
    """The conversions to try, most exact first."""
    from service.models import onnx_trees

    first = [{"layout": layout, "input_dtype": "double", "graph": TREES}] if onnx_trees.is_tree_model(model) else []
    return first + [{"layout": layout, "input_dtype": dtype, "graph": SKL2ONNX} for dtype in DTYPES]


def _better(result: Export, best: Export | None) -> bool:
    """Keep the failure that says most: one with bytes (for MODEL_BACKEND=onnx), then the smallest deviation."""
    if best is None or (best.data is None and result.data is not None):
        return True
    if result.data is None:
        return False
    ours, theirs = result.report.get("max_abs_diff"), best.report.get("max_abs_diff")
    return ours is not None and (theirs is None or ours < theirs)


def _convert(model: Any, features: list[dict[str, Any]], spec: dict[str, Any], task: str) -> bytes:
    """Return the ONNX bytes of ``model`` converted as ``spec`` says."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    number = DoubleTensorType if spec["input_dtype"] == "double" else FloatTensorType
    if spec["layout"] == MATRIX:
        types = [("X", number([None, len(features)]))]
    else:
        types = [(f["name"], number([None, 1]) if _is_numeric(f) else StringTensorType([None, 1])) for f in features]
    from service.models import onnx_double, onnx_trees

    onnx_double.register()
    if spec["graph"] == TREES:
        return onnx_trees.convert(model, types, task)
    options = {"zipmap": False} if task == "classification" else None
    with warnings.catch_warnings():
        # converter warnings concern its own internals; the parity check is what decides
        warnings.simplefilter("ignore")
        proto = to_onnx(model, initial_types=types, options=options)
    return proto.SerializeToString()


def check_rows(model: Any, X: pd.DataFrame, features: list[dict[str, Any]]) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows parity is checked on: the hold-out, then the probes built from the model (each row's kind)."""
    import pandas as pd

    from service.models import parity_probes

    found, kinds = parity_probes.probes(model, X, features)
    frame = pd.concat([X, found], ignore_index=True) if len(found) else X.reset_index(drop=True)
    return frame, np.concatenate([np.full(len(X), parity.HOLDOUT, dtype=object), kinds])


def check_parity(model: Any, data: bytes, rows: tuple[pd.DataFrame, np.ndarray], features: list[dict[str, Any]],
                 spec: dict[str, Any], task: str) -> Export:
    """Run the ONNX bytes and the estimator on the same rows and compare every output the API returns."""
    X, kinds = rows
    columns = {f["name"]: X[f["name"]].to_numpy() for f in features}
    try:
        runner = session(data)
        inputs = Inputs.of(features, spec, runner)
        usable = ~inputs.missing_strings(columns)  # those rows are joblib's to answer when served
        outputs = runner.run(None, inputs.feeds({name: values[usable] for name, values in columns.items()}))
    except Exception as exc:  # onnxruntime refuses some converter output (type mismatches)
        return Export(_report(FAILED, reason=f"onnxruntime: {type(exc).__name__}: {_short(exc)}", **spec))
    holdout = usable & (kinds == parity.HOLDOUT)
    details = {**spec, "rows": int(holdout.sum()), "probe_rows": int((usable & ~(kinds == parity.HOLDOUT)).sum())}
    if not holdout.any():
        return Export(_report(FAILED, reason="no hold-out row without a missing string to compare on", **details))
    frame = X[usable] if hasattr(model, "feature_names_in_") else X[usable].to_numpy()
    classification = task == "classification"
    expected = parity.Answers(np.asarray(model.predict(frame)),
                              np.asarray(model.predict_proba(frame), dtype=np.float64)
                              if classification and hasattr(model, "predict_proba") else None)
    if classification:
        try:
            labels = decode_labels(outputs[0], np.asarray(model.classes_))
        except ValueError as exc:
            return Export(_report(FAILED, reason=str(exc), **details))
        got = parity.Answers(labels, np.asarray(outputs[1], dtype=np.float64)
                             if expected.probabilities is not None and len(outputs) > 1 else None)
        if expected.probabilities is not None and got.probabilities is None:
            return Export(_report(FAILED, reason="the ONNX model gives no probabilities", **details))
    else:
        got = parity.Answers(regression_values(outputs[0]))
    measured = parity.measure(expected, got, kinds[usable], classification)
    reason = parity.verdict(measured)
    report = _report(FAILED if reason else OK, reason=reason, max_abs_diff=measured["max_abs_diff"],
                     parity=measured, **details)
    return Export(report, data)


def backend_line(manifest: dict[str, Any]) -> str:
    """One line for the person packaging: which backend serves by default, and why."""
    report = (manifest.get("backends") or {}).get("onnx") or {}
    status = report.get("status")
    if status == OK and parity.passes(report):
        rows = report.get("parity", {}).get("rows", {})
        probes = sum(n for kind, n in rows.items() if kind != parity.HOLDOUT)
        return (f"backend onnx: {report['input_dtype']} {report.get('graph')} graph within "
                f"{parity.TOLERANCE:g} of scikit-learn (largest deviation {report['max_abs_diff']:.3g} over "
                f"{rows.get(parity.HOLDOUT, 0)} hold-out and {probes} probe rows)")
    if status == FAILED:
        kept = " (model.onnx kept for MODEL_BACKEND=onnx)" if ONNX_FILE in manifest.get("files", {}) else ""
        return f"backend joblib: the ONNX export misses parity: {report.get('reason')}{kept}"
    return f"backend joblib: no ONNX export: {report.get('reason') or 'not converted'}"


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


def session(data: bytes, *, arena: bool = True) -> Any:
    """Create an ONNX Runtime session tuned for one request at a time in one worker process.

    ``arena=False`` turns off ONNX Runtime's CPU memory arena (the bench measures what it holds).
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
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
        import pandas as pd  # imported when a model has strings: a batch run of numbers never needs it

        flags = np.zeros(len(columns[self.features[0]]), dtype=bool)
        for name, numeric in zip(self.features, self.numeric, strict=True):
            if not numeric:
                flags |= pd.isna(columns[name])
        return flags

    def any_missing_string(self, columns: dict[str, np.ndarray]) -> bool:
        """Whether any row has a null in a string feature; a model of numbers only has none to look at."""
        return not all(self.numeric) and bool(self.missing_strings(columns).any())

    def feeds(self, columns: dict[str, np.ndarray], block: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Shape validated columns into the session's inputs.

        ``block``: the same columns as the rows of one float64 array (features x rows, in
        ``features`` order), which becomes a one-matrix model's input in a single copy.
        """
        if self.layout == MATRIX:
            if block is not None and block.shape[0] == len(self.features):
                return {self.names[0]: np.ascontiguousarray(block.T, dtype=self.dtype)}
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
        import pandas as pd

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
        if np.dtype(dtype).kind in "biufc":  # numpy's own number dtypes: no pandas to import for them
            return True
    except TypeError:
        pass  # a pandas dtype ("category", "Int64", ...)
    import pandas as pd

    try:
        return pd.api.types.is_numeric_dtype(pd.api.types.pandas_dtype(dtype)) or dtype in ("bool", "boolean")
    except TypeError:
        return False


def _report(status: str, *, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"status": status, "reason": reason, **extra}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."

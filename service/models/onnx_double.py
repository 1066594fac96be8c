"""skl2onnx converters for double graphs where its own emit float-only operators.

skl2onnx writes SimpleImputer as ai.onnx.ml's ``Imputer``, whose fill values are float32 and
which ONNX Runtime implements for float inputs only, so any double pipeline with an imputer
failed to load. ``register`` swaps in a converter that, for a double input, fills with the
fitted statistics in double (``Where(IsNaN(x), statistics, x)``, as SimpleImputer does) and
leaves every other case to skl2onnx's own. No Flask.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

_lock = threading.Lock()
_registered = False


def register() -> None:
    """Install the double-aware SimpleImputer converter once per process."""
    global _registered
    with _lock:
        if _registered:
            return
        from skl2onnx import update_registered_converter
        from skl2onnx.common._registration import get_shape_calculator
        from sklearn.impute import SimpleImputer

        update_registered_converter(SimpleImputer, "SklearnSimpleImputer",
                                    get_shape_calculator("SklearnSimpleImputer"), _convert_imputer)
        _registered = True


def _convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.operator_converters.common import concatenate_variables
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
    from skl2onnx.proto import onnx_proto

    imputer = operator.raw_operator
    double = all(isinstance(v.type, DoubleTensorType) for v in operator.inputs)
    if not double:
        convert_sklearn_imputer(scope, operator, container)
        return
    missing = imputer.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)) or getattr(imputer, "add_indicator", False):
        raise NotImplementedError("SimpleImputer in double: only NaN as the missing value, without indicators")
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if np.isnan(statistics).any():  # scikit-learn drops (or keeps as NaN) columns it saw empty
        raise NotImplementedError("SimpleImputer in double: a column that was empty when fitted")
    source = concatenate_variables(scope, operator.inputs, container)
    fill = scope.get_unique_variable_name("fill")
    container.add_initializer(fill, onnx_proto.TensorProto.DOUBLE, [len(statistics)], statistics.tolist())
    absent = scope.get_unique_variable_name("absent")
    container.add_node("IsNaN", [source], [absent], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node("Where", [absent, fill, source], [operator.outputs[0].full_name],
                       name=scope.get_unique_operator_name("Where"))

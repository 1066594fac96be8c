"""The three ways to split a model's output into per-feature contributions.

Each builder returns a ``Method`` or raises ``Unsupported``: exact contributions for linear
models (and pipelines ending in one), exact path-dependent TreeSHAP (``shap``'s TreeExplainer)
for tree ensembles, and a sampled permutation estimate against reference rows for anything
else. Every method works on the scikit-learn estimator (``LoadedModel.estimator``), never on
another backend's session, so it explains the model that was validated. No Flask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from service.explain.background import reference_rows
from service.explain.columns import Unsupported, grouping, origins, split, transform

LOG_ODDS, PROBABILITY, VALUE = "log_odds", "probability", "value"
#: Tree models whose TreeSHAP output is the averaged class probability, not a raw score.
PROBABILITY_TREES = (RandomForestClassifier, ExtraTreesClassifier, DecisionTreeClassifier)
TREES = (*PROBABILITY_TREES, RandomForestRegressor, ExtraTreesRegressor, DecisionTreeRegressor,
         GradientBoostingClassifier, GradientBoostingRegressor, HistGradientBoostingClassifier,
         HistGradientBoostingRegressor)
#: Reference rows behind the linear base value (their mean in the model's own columns).
LINEAR_BACKGROUND = 200
#: The model-agnostic estimate: reference rows, permutations (in reversed pairs) and a row limit;
#: one explained row costs PERMUTATIONS * (features + 1) * BACKGROUND model evaluations.
SAMPLED_BACKGROUND = 32
SAMPLED_PERMUTATIONS = 8
SAMPLED_MAX_ROWS = 20
#: TreeSHAP costs ~5 ms per row on a 100-tree forest (make bench): past this many rows one request
#: would hold a sync worker for seconds, towards its timeout.
TREE_SHAP_MAX_ROWS = 1000
SAMPLED_SEED = 0

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class Method:
    """How one model version is explained: ``run`` gives (base (k,), contributions (n, d, k))."""

    name: str  # linear | tree_shap | sampled_permutation
    output: str  # log_odds | probability | value
    exact: bool
    run: Callable[[Columns], tuple[np.ndarray, np.ndarray]]
    outputs: Callable[[Columns], np.ndarray]  # the explained output itself, (n, k)
    classes: list[Any] | None  # the class of each output column; None for a regressor
    max_rows: int | None = None
    additive: bool = False  # a feature's contribution depends on its own value only


def linear(model: Any) -> Method:
    """Exact contributions ``w * (z - mean z)`` summed back to the input features."""
    steps, final = split(model.estimator)
    if not hasattr(final, "coef_") or not type(final).__module__.startswith(("sklearn.linear_model", "sklearn.svm")) \
            or "_glm" in type(final).__module__:
        raise Unsupported(f"{type(final).__name__} is not a linear model")
    names = [f["name"] for f in model.features]
    weights = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
    intercept = np.broadcast_to(np.atleast_1d(np.asarray(final.intercept_, dtype=np.float64)), (len(weights),))
    origin = origins(steps, len(names))
    if weights.shape[1] != len(origin):
        raise Unsupported("the preprocessing output does not match the model's coefficients")
    group = grouping(origin, len(names))
    rows = reference_rows(model.manifest, LINEAR_BACKGROUND, model.estimator)
    mean = transform(steps, model.frame(rows)).mean(axis=0) if rows is not None else np.zeros(len(origin))
    base = intercept + weights @ mean

    def run(columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        centred = transform(steps, model.frame(columns)) - mean
        return base, np.einsum("np,kp,pd->ndk", centred, weights, group)

    if is_classifier(final):
        return Method("linear", LOG_ODDS, True, run, _decision(model), _scored(model, len(weights)), additive=True)
    return Method("linear", VALUE, True, run, _predicted(model), None, additive=True)


def tree(model: Any) -> Method:
    """Exact path-dependent TreeSHAP of a tree ensemble, summed back through the preprocessing."""
    steps, final = split(model.estimator)
    if not isinstance(final, TREES):
        raise Unsupported(f"{type(final).__name__} is not a supported tree ensemble")
    import shap  # heavy (numba): only when a tree model is explained

    explainers = _gb_per_class(shap, final) if _multiclass_boosting(final) else [shap.TreeExplainer(final)]
    names = [f["name"] for f in model.features]
    classifier = is_classifier(final)
    probability = isinstance(final, PROBABILITY_TREES)
    binary = classifier and len(final.classes_) == 2
    group: np.ndarray | None = None

    def run(columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        nonlocal group
        data = transform(steps, model.frame(columns))
        parts = [np.asarray(e.shap_values(data, check_additivity=False), dtype=np.float64) for e in explainers]
        values = np.stack(parts, axis=2) if len(parts) > 1 else parts[0]
        values = values[:, :, None] if values.ndim == 2 else values
        base = np.concatenate([np.atleast_1d(np.asarray(e.expected_value, dtype=np.float64)) for e in explainers])
        if binary and probability:  # one column per class: keep the second class's, as log-odds do
            values, base = values[:, :, 1:], base[1:]
        if group is None:
            group = grouping(origins(steps, len(names)), len(names))
        return base, np.einsum("npk,pd->ndk", values, group)

    if not classifier:
        return Method("tree_shap", VALUE, True, run, _predicted(model), None, TREE_SHAP_MAX_ROWS)
    k = 1 if binary else len(final.classes_)
    if probability:
        return Method("tree_shap", PROBABILITY, True, run, _probability(model), _scored(model, k), TREE_SHAP_MAX_ROWS)
    return Method("tree_shap", LOG_ODDS, True, run, _decision(model), _scored(model, k), TREE_SHAP_MAX_ROWS)


def _multiclass_boosting(final: Any) -> bool:
    return isinstance(final, GradientBoostingClassifier) and final.estimators_.shape[1] > 1


def _gb_per_class(shap: Any, final: GradientBoostingClassifier) -> list[Any]:
    """One TreeExplainer per class of a multiclass GradientBoostingClassifier (shap reads binary ones only).

    Class k's raw score is its initial score plus ``learning_rate`` times its trees; the initial
    score is what ``decision_function`` gives beyond the trees at any one point.
    """
    point = np.zeros((1, final.n_features_in_), dtype=np.float32)
    names = getattr(final, "feature_names_in_", None)
    initial = final.decision_function(point if names is None else pd.DataFrame(point, columns=names))[0]
    explainers = []
    for k in range(final.estimators_.shape[1]):
        trees = [_tree_dict(e.tree_, final.learning_rate) for e in final.estimators_[:, k]]
        offset = initial[k] - sum(final.learning_rate * e.predict(point)[0] for e in final.estimators_[:, k])
        explainers.append(shap.TreeExplainer({"trees": trees, "base_offset": float(offset), "tree_output": "raw_value",
                                              "input_dtype": np.float32}))
    return explainers


def _tree_dict(tree: Any, scale: float) -> dict[str, np.ndarray]:
    missing_left = getattr(tree, "missing_go_to_left", None)
    default = tree.children_left if missing_left is None else \
        np.where(missing_left.astype(bool), tree.children_left, tree.children_right)
    return {"children_left": tree.children_left, "children_right": tree.children_right, "children_default": default,
            "features": tree.feature, "thresholds": tree.threshold,
            "values": tree.value.reshape(tree.value.shape[0], -1) * scale,
            "node_sample_weight": tree.weighted_n_node_samples}


def sampled(model: Any) -> Method:
    """An interventional Shapley estimate by permutations against reference rows (approximate).

    Each permutation's steps telescope, so base + the contributions still equals the output;
    the split between features is what is estimated.
    """
    background = reference_rows(model.manifest, SAMPLED_BACKGROUND, model.estimator)
    if background is None:
        raise Unsupported("the manifest has no reference profile to sample a baseline from")
    classifier = model.manifest["task"] == "classification"
    if classifier and not callable(getattr(model.estimator, "predict_proba", None)):
        raise Unsupported("a classifier without predict_proba")
    binary = classifier and len(model.classes or ()) == 2
    outputs = _probability(model) if classifier else _predicted(model)
    names = [f["name"] for f in model.features]

    def run(columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        n = len(next(iter(columns.values())))
        rng = np.random.default_rng(SAMPLED_SEED)  # the same row always gets the same explanation
        results = [_permutations(outputs, names, background, {k: v[i:i + 1] for k, v in columns.items()}, rng)
                   for i in range(n)]
        return results[0][0], np.stack([r[1] for r in results])

    k = 1 if binary or not classifier else len(model.classes)
    return Method("sampled_permutation", PROBABILITY if classifier else VALUE, False, run, outputs,
                  _scored(model, k) if classifier else None, SAMPLED_MAX_ROWS)


def _permutations(outputs: Callable[[Columns], np.ndarray], names: list[str], background: Columns, row: Columns,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    d, b, half = len(names), len(next(iter(background.values()))), SAMPLED_PERMUTATIONS // 2
    orders = [rng.permutation(d) for _ in range(half)]
    orders += [order[::-1] for order in orders]  # reversed pairs cancel much of the sampling noise
    rank = np.empty((len(orders), d), dtype=np.int64)
    for m, order in enumerate(orders):
        rank[m, order] = np.arange(d)
    steps = np.arange(d + 1)
    hybrid = {}
    for j, name in enumerate(names):
        # step s of permutation m takes the row's value for the features ranked below s
        take = np.repeat((rank[:, j][:, None] < steps[None, :]).reshape(-1), b)
        column = np.tile(background[name], len(orders) * (d + 1))
        column[take] = row[name][0]
        hybrid[name] = column
    scored = outputs(hybrid).reshape(len(orders), d + 1, b, -1).mean(axis=2)
    gains = scored[:, 1:] - scored[:, :-1]  # (m, step, k)
    contributions = np.stack([gains[np.arange(len(orders)), rank[:, j]].mean(axis=0) for j in range(d)])
    return scored[0, 0], contributions


def _scored(model: Any, k: int) -> list[Any]:
    classes = list(model.classes or model.estimator.classes_)
    return classes[1:] if k == 1 else classes


def _decision(model: Any) -> Callable[[Columns], np.ndarray]:
    def outputs(columns: Columns) -> np.ndarray:
        scores = np.asarray(model.estimator.decision_function(model.frame(columns)), dtype=np.float64)
        return scores.reshape(len(scores), -1)
    return outputs


def _probability(model: Any) -> Callable[[Columns], np.ndarray]:
    binary = len(model.classes or ()) == 2

    def outputs(columns: Columns) -> np.ndarray:
        proba = np.asarray(model.estimator.predict_proba(model.frame(columns)), dtype=np.float64)
        return proba[:, 1:] if binary else proba
    return outputs


def _predicted(model: Any) -> Callable[[Columns], np.ndarray]:
    def outputs(columns: Columns) -> np.ndarray:
        values = np.asarray(model.estimator.predict(model.frame(columns)), dtype=np.float64)
        return values.reshape(len(values), -1)
    return outputs

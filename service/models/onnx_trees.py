"""Double-precision ONNX graphs for tree ensembles, built to add up the way scikit-learn does.

skl2onnx writes tree thresholds and leaf values as float32 attributes even in a double graph,
so its trees answer within ~1e-7, not exactly. This module reads the fitted trees and writes
ONNX's ``TreeEnsemble`` (ai.onnx.ml opset 5: double splits and leaf weights) itself; the
preprocessing before the trees is still skl2onnx's. It reproduces scikit-learn's arithmetic:
inputs rounded to float32 where scikit-learn's own trees round them, leaves summed in the
estimator's order starting from its baseline, averages divided once at the end, the same link
and the same decision rule for the class. ``convert`` raises ``Unsupported`` for anything else;
the parity check judges what it builds. No Flask.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper
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
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

#: ai.onnx.ml's TreeEnsemble with double splits and weights arrived in opset 5.
ML_OPSET = 5
#: The preprocessing's output, renamed so it never clashes with a graph output.
FEATURES = "exact_features"
FORESTS = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)
SINGLE_TREES = (DecisionTreeClassifier, DecisionTreeRegressor)
BOOSTING = (GradientBoostingClassifier, GradientBoostingRegressor)
HIST = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
SUPPORTED = (*FORESTS, *SINGLE_TREES, *BOOSTING, *HIST)


class Unsupported(ValueError):
    """A model this builder does not reproduce exactly; the message says which part."""


@dataclass(frozen=True)
class Tree:
    """One tree as parallel node arrays (scikit-learn's layout); ``left`` is -1 at a leaf."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray  # each node's contribution to ``target`` (used at leaves only)
    target: int


def is_tree_model(model: Any) -> bool:
    """Whether ``model`` (or its pipeline's last step) is a tree ensemble this module builds."""
    return isinstance(final_step(model)[1], SUPPORTED)


def final_step(model: Any) -> tuple[list[Any], Any]:
    """Return the preprocessing steps and the final estimator of a model or Pipeline."""
    if isinstance(model, Pipeline):
        steps = [step for _, step in model.steps[:-1] if step not in (None, "passthrough")]
        inner, final = final_step(model.steps[-1][1])
        return steps + inner, final
    return [], model


def convert(model: Any, input_types: list[tuple[str, Any]], task: str) -> bytes:
    """Build the double graph of ``model``; outputs match skl2onnx's (label + probabilities, or variable)."""
    steps, final = final_step(model)
    if not isinstance(final, SUPPORTED):
        raise Unsupported(f"{type(final).__name__} is not a tree ensemble")
    graph = _Graph()
    features = graph.preprocess(steps, input_types)
    if not isinstance(final, HIST):  # scikit-learn's own trees compare float32(x) with a double threshold
        features = graph.node("Cast", [graph.node("Cast", [features], to=TensorProto.FLOAT)], to=TensorProto.DOUBLE)
    trees, n_targets, scale = _trees(final)
    raw = graph.node("TreeEnsemble", [features], domain="ai.onnx.ml", **_attributes(trees, n_targets))
    if scale != 1:
        raw = graph.node("Div", [raw, graph.constant(np.array(scale, dtype=np.float64))])
    if task == "regression":
        graph.output("variable", raw, TensorProto.DOUBLE, [None, 1])
    else:
        label, proba = _classify(graph, final, raw)
        classes = np.asarray(final.classes_)
        graph.output("label", graph.node("Gather", [graph.constant(_labels(classes)), label]),
                     TensorProto.STRING if classes.dtype.kind in "OUS" else TensorProto.INT64, [None])
        graph.output("probabilities", proba, TensorProto.DOUBLE, [None, len(classes)])
    return graph.serialize()


def _trees(final: Any) -> tuple[list[Tree], int, float]:
    """Every tree in the order scikit-learn adds them, the number of outputs, and the final divisor."""
    if isinstance(final, (*FORESTS, *SINGLE_TREES)):
        estimators = [final] if isinstance(final, SINGLE_TREES) else list(final.estimators_)
        if getattr(final, "n_outputs_", 1) != 1:
            raise Unsupported("multi-output trees")
        classes = len(final.classes_) if hasattr(final, "classes_") else 0
        trees = []
        for estimator in estimators:
            value = estimator.tree_.value[:, 0, :]
            if classes:  # each tree's probabilities, normalised as DecisionTreeClassifier.predict_proba does
                normalizer = value.sum(axis=1)
                normalizer[normalizer == 0.0] = 1.0
                value = value / normalizer[:, np.newaxis]
            trees += [_sklearn_tree(estimator.tree_, value[:, k], k) for k in range(max(classes, 1))]
        return trees, max(classes, 1), 1.0 if isinstance(final, SINGLE_TREES) else float(len(estimators))
    if isinstance(final, BOOSTING):
        return _boosting(final)
    return _hist(final)


def _boosting(final: Any) -> tuple[list[Tree], int, float]:
    init = final.init_
    if not (isinstance(init, str) and init == "zero") and type(init).__name__ not in ("DummyClassifier", "DummyRegressor"):
        raise Unsupported(f"GradientBoosting with an {type(init).__name__} init estimator (a per-row baseline)")
    k = final.estimators_.shape[1]
    point = np.zeros((1, final.n_features_in_), dtype=np.float32)
    with warnings.catch_warnings():  # a bare array where the model saw names: the baseline is constant
        warnings.simplefilter("ignore")
        baseline = np.asarray(final._raw_predict_init(point), dtype=np.float64).reshape(-1)
    trees = [_leaf(baseline[j], j) for j in range(k)]  # scikit-learn starts from the baseline
    for stage in final.estimators_:
        trees += [_sklearn_tree(stage[j].tree_, final.learning_rate * stage[j].tree_.value[:, 0, 0], j)
                  for j in range(k)]
    return trees, k, 1.0


def _hist(final: Any) -> tuple[list[Tree], int, float]:
    if isinstance(final, HistGradientBoostingRegressor) and type(final._loss.link).__name__ != "IdentityLink":
        raise Unsupported(f"HistGradientBoostingRegressor with the {final.loss} loss (a non-identity link)")
    baseline = np.asarray(final._baseline_prediction, dtype=np.float64).reshape(-1)
    trees = [_leaf(baseline[j], j) for j in range(len(baseline))]
    for predictors in final._predictors:
        for j, predictor in enumerate(predictors):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise Unsupported("HistGradientBoosting with categorical splits")
            leaf = nodes["is_leaf"].astype(bool)
            trees.append(Tree(nodes["feature_idx"].astype(np.int64), nodes["num_threshold"].astype(np.float64),
                              np.where(leaf, -1, nodes["left"].astype(np.int64)),
                              np.where(leaf, -1, nodes["right"].astype(np.int64)),
                              nodes["missing_go_to_left"].astype(bool), nodes["value"].astype(np.float64), j))
    return trees, len(baseline), 1.0


def _sklearn_tree(tree: Any, value: np.ndarray, target: int) -> Tree:
    return Tree(tree.feature.astype(np.int64), tree.threshold.astype(np.float64), tree.children_left.astype(np.int64),
                tree.children_right.astype(np.int64), tree.missing_go_to_left.astype(bool),
                np.asarray(value, dtype=np.float64), target)


def _leaf(value: float, target: int) -> Tree:
    """A tree that is one leaf: a constant added in the tree order (the baseline goes first)."""
    return Tree(np.zeros(1, np.int64), np.zeros(1), np.full(1, -1), np.full(1, -1), np.zeros(1, bool),
                np.array([value], dtype=np.float64), target)


def _attributes(trees: list[Tree], n_targets: int) -> dict[str, Any]:
    """Lay the trees out as TreeEnsemble's node and leaf arrays (a lone leaf gets a split to itself)."""
    nodes: dict[str, list[Any]] = {key: [] for key in ("feature", "split", "true", "true_leaf", "false", "false_leaf",
                                                      "missing")}
    leaves: dict[str, list[Any]] = {"target": [], "weight": []}
    roots = []
    for tree in trees:
        interior = np.flatnonzero(tree.left >= 0)
        if len(interior) == 0:
            roots.append(len(nodes["feature"]))
            for key, value in zip(nodes, (0, 0.0, len(leaves["target"]), 1, len(leaves["target"]), 1, 0), strict=True):
                nodes[key].append(value)
            leaves["target"].append(tree.target)
            leaves["weight"].append(tree.value[0])
            continue
        node_id = {int(n): len(nodes["feature"]) + i for i, n in enumerate(interior)}
        leaf_ids = np.flatnonzero(tree.left < 0)
        leaf_id = {int(n): len(leaves["target"]) + i for i, n in enumerate(leaf_ids)}
        roots.append(node_id[0])
        for n in interior:
            left, right = int(tree.left[n]), int(tree.right[n])
            nodes["feature"].append(int(tree.feature[n]))
            nodes["split"].append(float(tree.threshold[n]))
            nodes["true"].append(node_id.get(left, leaf_id.get(left)))
            nodes["true_leaf"].append(int(left in leaf_id))
            nodes["false"].append(node_id.get(right, leaf_id.get(right)))
            nodes["false_leaf"].append(int(right in leaf_id))
            nodes["missing"].append(int(tree.missing_left[n]))
        leaves["target"] += [tree.target] * len(leaf_ids)
        leaves["weight"] += [float(v) for v in tree.value[leaf_ids]]
    return {
        "n_targets": n_targets, "aggregate_function": 1, "post_transform": 0,  # SUM, no transform
        "tree_roots": roots, "nodes_featureids": nodes["feature"],
        "nodes_splits": numpy_helper.from_array(np.asarray(nodes["split"], dtype=np.float64), "nodes_splits"),
        "nodes_modes": numpy_helper.from_array(np.zeros(len(nodes["feature"]), dtype=np.uint8), "nodes_modes"),
        "nodes_truenodeids": nodes["true"], "nodes_trueleafs": nodes["true_leaf"],
        "nodes_falsenodeids": nodes["false"], "nodes_falseleafs": nodes["false_leaf"],
        "nodes_missing_value_tracks_true": nodes["missing"],
        "leaf_targetids": leaves["target"],
        "leaf_weights": numpy_helper.from_array(np.asarray(leaves["weight"], dtype=np.float64), "leaf_weights"),
    }


def _classify(graph: _Graph, final: Any, raw: str) -> tuple[str, str]:
    """The class index and the probabilities, each computed by the estimator's own rule."""
    if isinstance(final, (*FORESTS, *SINGLE_TREES)):  # the averaged probabilities; the first largest wins
        return graph.node("ArgMax", [raw], axis=1, keepdims=0), raw
    if len(final.classes_) > 2:  # boosting: softmax of the raw scores, argmax of the raw scores
        return graph.node("ArgMax", [raw], axis=1, keepdims=0), graph.node("Softmax", [raw], axis=1)
    positive = graph.node("Sigmoid", [raw])
    proba = graph.node("Concat", [graph.node("Sub", [graph.constant(np.array(1.0)), positive]), positive], axis=1)
    # HistGradientBoosting says class 1 when raw > 0, GradientBoosting when raw >= 0
    rule = "Greater" if isinstance(final, HIST) else "GreaterOrEqual"
    decided = graph.node(rule, [raw, graph.constant(np.array(0.0))])
    index = graph.node("Reshape", [graph.node("Cast", [decided], to=TensorProto.INT64),
                                   graph.constant(np.array([-1], dtype=np.int64))])
    return index, proba


def _labels(classes: np.ndarray) -> np.ndarray:
    if classes.dtype.kind in "OUS":
        if not all(isinstance(c, str) for c in classes):
            raise Unsupported("classes that are neither all integers nor all strings")
        return np.asarray(classes, dtype=object)
    if classes.dtype.kind not in "iu":
        raise Unsupported(f"classes of dtype {classes.dtype}")
    return classes.astype(np.int64)


class _Graph:
    """A graph under construction: skl2onnx's preprocessing, then nodes appended by name."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self.opsets: dict[str, int] = {"": 18}
        self.count = 0

    def preprocess(self, steps: list[Any], input_types: list[tuple[str, Any]]) -> str:
        """Convert the preprocessing steps with skl2onnx; return the name of the double matrix they make."""
        if not steps:
            self.inputs = [helper.make_tensor_value_info(name, TensorProto.DOUBLE, [None, kind.shape[1]])
                           for name, kind in input_types]
            names = [name for name, _ in input_types]
            return names[0] if len(names) == 1 else self.node("Concat", names, axis=1)
        from skl2onnx import to_onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = to_onnx(Pipeline([(f"step{i}", s) for i, s in enumerate(steps)]) if len(steps) > 1 else steps[0],
                            initial_types=input_types)
        if len(proto.graph.output) != 1:
            raise Unsupported("the preprocessing has more than one output")
        out = proto.graph.output[0]
        for node in proto.graph.node:  # skl2onnx names its output "variable", one of ours
            node.output[:] = [FEATURES if name == out.name else name for name in node.output]
            node.input[:] = [FEATURES if name == out.name else name for name in node.input]
        self.nodes += list(proto.graph.node)
        self.initializers += list(proto.graph.initializer)
        self.inputs = list(proto.graph.input)
        self.opsets |= {o.domain: o.version for o in proto.opset_import}
        if out.type.tensor_type.elem_type == TensorProto.DOUBLE:
            return FEATURES
        return self.node("Cast", [FEATURES], to=TensorProto.DOUBLE)

    def node(self, op: str, inputs: list[str], *, domain: str = "", **attributes: Any) -> str:
        self.count += 1
        name = f"exact_{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, domain=domain, **attributes))
        return name

    def constant(self, value: np.ndarray) -> str:
        self.count += 1
        name = f"exact_const_{self.count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def output(self, name: str, source: str, elem: int, shape: list[Any]) -> None:
        self.nodes.append(helper.make_node("Identity", [source], [name], name=f"exact_out_{name}"))
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))

    def serialize(self) -> bytes:
        opsets = self.opsets | {"ai.onnx.ml": ML_OPSET}
        graph = helper.make_graph(self.nodes, "exact", self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
        return model.SerializeToString()

"""Additivity of every explanation method, family by family: base + contributions == the model's output."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
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
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service import explain
from service.explain import methods
from tests.explain.helpers import cancer, columns_of, diabetes, loaded, mixed, output, three_classes


def scaled_logistic():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def mixed_pipeline(final):
    numeric = make_pipeline(SimpleImputer(add_indicator=True), StandardScaler())
    prepare = ColumnTransformer([("num", numeric, ["age", "income"]),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    return make_pipeline(prepare, final)


CASES = {
    "logistic-binary": (scaled_logistic, cancer, "linear", "log_odds", 1),
    "logistic-multiclass": (scaled_logistic, three_classes, "linear", "log_odds", 3),
    "ridge": (lambda: Ridge(alpha=1.0), diabetes, "linear", "value", 1),
    "pipeline-columns": (lambda: mixed_pipeline(LogisticRegression()), mixed, "linear", "log_odds", 1),
    "random-forest-classifier": (lambda: RandomForestClassifier(20, max_depth=6, random_state=0), cancer,
                                 "tree_shap", "probability", 1),
    "random-forest-multiclass": (lambda: RandomForestClassifier(10, max_depth=5, random_state=0), three_classes,
                                 "tree_shap", "probability", 3),
    "random-forest-regressor": (lambda: RandomForestRegressor(20, max_depth=6, random_state=0), diabetes,
                                "tree_shap", "value", 1),
    "extra-trees-classifier": (lambda: ExtraTreesClassifier(20, max_depth=6, random_state=0), cancer,
                               "tree_shap", "probability", 1),
    "extra-trees-regressor": (lambda: ExtraTreesRegressor(20, max_depth=6, random_state=0), diabetes,
                              "tree_shap", "value", 1),
    "gradient-boosting-classifier": (lambda: GradientBoostingClassifier(n_estimators=30, random_state=0), cancer,
                                     "tree_shap", "log_odds", 1),
    "gradient-boosting-multiclass": (lambda: GradientBoostingClassifier(n_estimators=10, random_state=0),
                                     three_classes, "tree_shap", "log_odds", 3),
    "gradient-boosting-regressor": (lambda: GradientBoostingRegressor(n_estimators=30, random_state=0), diabetes,
                                    "tree_shap", "value", 1),
    "hist-gradient-boosting-classifier": (lambda: HistGradientBoostingClassifier(max_iter=30), cancer,
                                          "tree_shap", "log_odds", 1),
    "hist-gradient-boosting-multiclass": (lambda: HistGradientBoostingClassifier(max_iter=10), three_classes,
                                          "tree_shap", "log_odds", 3),
    "hist-gradient-boosting-regressor": (lambda: HistGradientBoostingRegressor(max_iter=30), diabetes,
                                         "tree_shap", "value", 1),
    "forest-in-pipeline": (lambda: mixed_pipeline(RandomForestClassifier(20, random_state=0)), mixed,
                           "tree_shap", "probability", 1),
    "sampled-classifier": (lambda: make_pipeline(StandardScaler(), KNeighborsClassifier()), cancer,
                           "sampled_permutation", "probability", 1),
    "sampled-regressor": (lambda: KNeighborsRegressor(), diabetes, "sampled_permutation", "value", 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_base_plus_contributions_is_the_output(case):
    build, data, method, kind, k = CASES[case]
    X, y = data()
    model = loaded(build(), X, y)
    rows = X.iloc[:12]
    found = explain.explain(model, columns_of(model, rows))
    assert (found.method, found.output, found.exact) == (method, kind, method != "sampled_permutation")
    assert found.contributions.shape == (12, X.shape[1], k)
    total = found.base + found.contributions.sum(axis=1)
    np.testing.assert_allclose(total, output(model, kind, rows), rtol=0, atol=1e-6)


def test_multiclass_items_are_lists_in_class_order():
    X, y = three_classes()
    model = loaded(scaled_logistic(), X, y)
    found = explain.explain(model, columns_of(model, X.iloc[:2]))
    assert found.summary()["classes"] == ["l", "m", "s"]
    item = found.items()[0]
    assert len(item["base"]) == 3 and all(len(v) == 3 for v in item["contributions"].values())


def test_binary_answers_speak_for_the_second_class():
    X, y = cancer()
    model = loaded(scaled_logistic(), X, y)
    found = explain.explain(model, columns_of(model, X.iloc[:1]))
    assert found.summary() == {"method": "linear", "output": "log_odds", "exact": True, "class": 1}
    assert set(found.items()[0]["contributions"]) == set(X.columns)


def test_linear_contributions_are_the_textbook_ones():
    # one standardised feature: the contribution is w * (z - mean z) and nothing else
    X, y = cancer()
    X = X[["mean_radius"]]
    model = loaded(scaled_logistic(), X, y)
    found = explain.explain(model, columns_of(model, X.iloc[:3]))
    scaler, logistic = model.estimator[0], model.estimator[-1]
    z = scaler.transform(X.iloc[:3])[:, 0]
    mean = (found.base[0] - logistic.intercept_[0]) / logistic.coef_[0, 0]
    np.testing.assert_allclose(found.contributions[:, 0, 0], logistic.coef_[0, 0] * (z - mean), atol=1e-12)


def test_one_hot_columns_add_up_to_their_feature():
    X, y = mixed()
    model = loaded(mixed_pipeline(LogisticRegression()), X, y)
    found = explain.explain(model, columns_of(model, X.iloc[:5]))
    assert found.features == ["age", "income", "city"]
    assert np.all(found.contributions[:, 2, 0] != 0)  # the one-hot columns landed on "city"


def test_tree_shap_matches_the_shap_library_values():
    import shap

    X, y = diabetes()
    model = loaded(GradientBoostingRegressor(n_estimators=20, random_state=0), X, y)
    found = explain.explain(model, columns_of(model, X.iloc[:5]))
    expected = shap.TreeExplainer(model.estimator).shap_values(X.iloc[:5].to_numpy())
    np.testing.assert_allclose(found.contributions[:, :, 0], expected, atol=1e-12)


def test_sampled_method_is_reproducible_and_limited():
    X, y = diabetes()
    model = loaded(KNeighborsRegressor(), X, y)
    columns = columns_of(model, X.iloc[:2])
    first, second = explain.explain(model, columns), explain.explain(model, columns)
    np.testing.assert_array_equal(first.contributions, second.contributions)
    assert "approximate" in first.summary()["note"]
    too_many = columns_of(model, X.iloc[:methods.SAMPLED_MAX_ROWS + 1])
    with pytest.raises(explain.ExplanationUnavailable, match="limited to"):
        explain.explain(model, too_many)


def test_tree_shap_is_limited_to_a_number_of_rows_a_worker_answers_in_time(monkeypatch):
    X, y = diabetes()
    model = loaded(RandomForestRegressor(n_estimators=3, random_state=0), X, y)
    monkeypatch.setattr(methods, "TREE_SHAP_MAX_ROWS", 5)  # read when the model's method is chosen, just below
    assert explain.explain(model, columns_of(model, X.iloc[:5])).contributions.shape[0] == 5
    with pytest.raises(explain.ExplanationUnavailable, match="tree shap, limited to 5 rows"):
        explain.explain(model, columns_of(model, X.iloc[:6]))


def test_a_wrong_exact_method_is_never_trusted(monkeypatch):
    X, y = diabetes()
    model = loaded(Ridge(), X, y)
    real = methods.linear

    def skewed(m):
        found = real(m)
        return methods.Method(found.name, found.output, True, lambda c: (found.run(c)[0] + 1, found.run(c)[1]),
                              found.outputs, found.classes, additive=True)

    monkeypatch.setattr(methods, "linear", skewed)
    assert explain.method_for(model).name == "sampled_permutation"


def test_importance_ranks_features_by_mean_absolute_contribution():
    X, y = diabetes()
    model = loaded(Ridge(alpha=0.01), X, y)
    ranked = explain.importance(model)
    assert ranked["method"] == "linear" and list(ranked["features"])[0] in ("bmi", "s5", "s1")
    values = list(ranked["features"].values())
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("build", [lambda: HistGradientBoostingClassifier(max_iter=20),
                                   lambda: RandomForestClassifier(20, random_state=0)], ids=["hist", "forest"])
def test_missing_values_follow_the_trees_own_default_branch(build):
    X, y = cancer()
    X = X.copy()
    X.iloc[::3, 1] = np.nan
    model = loaded(build(), X, y)
    found = explain.explain(model, columns_of(model, X.iloc[:12]))
    assert found.method == "tree_shap"
    np.testing.assert_allclose(found.base + found.contributions.sum(axis=1), output(model, found.output, X.iloc[:12]),
                               rtol=0, atol=1e-6)


def test_native_categorical_boosting_falls_back_to_sampling():
    X, y = mixed()
    X = X.astype({"city": "category"})
    model = loaded(HistGradientBoostingClassifier(max_iter=20), X, y)
    found = explain.explain(model, columns_of(model, X.iloc[:3]))
    assert (found.method, found.exact) == ("sampled_permutation", False)
    np.testing.assert_allclose(found.base + found.contributions.sum(axis=1), output(model, "probability", X.iloc[:3]),
                               rtol=0, atol=1e-9)


def test_contributions_that_are_not_finite_are_given_as_not_available():
    from service.explain import _value

    assert _value(np.array([1.5])) == 1.5
    assert _value(np.array([np.nan, np.inf, -np.inf, 2.0])) == [None, None, None, 2.0]

"""What the fitted estimator says about its inputs comes first; the data fills in; the hold-out checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from service.models import pii
from service.models import schema_inference as si

FRAME = pd.DataFrame({"n": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0], "code": ["01", "02", "01", "03", "02", "01"],
                      "city": ["sp", "rj", "sp", "bh", np.nan, "rj"]})
Y = [0, 1, 0, 1, 0, 1]


def test_categories_and_imputed_columns_are_read_through_column_transformers_by_position():
    prep = ColumnTransformer([("num", SimpleImputer(), [0]), ("codes", OrdinalEncoder(), [1]),
                              ("city", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()), [2])])
    fitted = si.read_model(make_pipeline(prep, LogisticRegression()).fit(FRAME, Y))
    assert fitted.names == ["n", "code", "city"] and fitted.count == 3
    assert fitted.categories == {"code": ["01", "02", "03"], "city": ["bh", "rj", "sp"]}
    assert fitted.nullable == {"n", "city"}
    assert si.declared_dtypes(fitted, {"n": {"type": "string"}}) == {"code": "str", "city": "str", "n": "str"}


def test_an_encoder_that_saw_nan_makes_its_feature_nullable_and_hgb_makes_all():
    fitted = si.read_model(make_pipeline(OneHotEncoder(), LogisticRegression()).fit(FRAME[["city"]], Y))
    assert fitted.categories == {"city": ["bh", "rj", "sp"]} and fitted.nullable == {"city"}
    schema = si.infer_schema(HistGradientBoostingClassifier(max_iter=2).fit(FRAME[["n"]].fillna(0), Y), FRAME[["n"]])
    assert schema.features[0]["nullable"] and not schema.features[0]["required"]


def test_the_holdout_checks_but_does_not_teach_categories():
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(FRAME[["code"]], Y)
    holdout = pd.DataFrame({"code": ["01", "09"]})
    schema = si.infer_schema(model, holdout)
    assert schema.features[0]["categories"] == ["01", "02", "03"]
    assert schema.sources == {"code": {"type": "model", "categories": "model"}}
    assert schema.notes == ["--data column 'code' holds values outside the schema's categories: 09"]


def test_an_array_model_is_named_by_names_or_by_a_schema_listing_every_feature():
    model = LogisticRegression().fit(FRAME[["n"]].fillna(0).assign(m=1.0).to_numpy(), Y)
    fitted = si.read_model(model)
    assert si.feature_order(fitted, None, None) is None
    assert si.feature_order(fitted, None, {"b": {}, "a": {}}) == ["b", "a"]
    assert si.feature_order(fitted, ["x", "y"], None) == ["x", "y"]
    with pytest.raises(ValueError, match="--features names 1 features, the model expects 2"):
        si.feature_order(fitted, ["x"], None)
    with pytest.raises(ValueError, match="--features names b, a but the model was fitted on a, b"):
        si.feature_order(si.FittedSchema(names=["a", "b"], count=2), ["b", "a"], None)


def test_pii_categories_leave_as_salted_hashes_and_the_holdout_note_counts_them():
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(FRAME[["code"]], Y)
    schema = si.infer_schema(model, pd.DataFrame({"code": ["01", "09", "77"]}), overrides={"code": {"pii": True}},
                             salt="ab" * 16)
    feature = schema.features[0]
    assert feature["categories"] is None
    assert feature["category_sha256"] == pii.hash_categories("ab" * 16, ["01", "02", "03"])
    assert schema.notes == ["--data column 'code' holds 2 distinct values outside the schema's categories "
                            "(personal data: not listed)"]


def test_a_pii_range_is_kept_only_when_the_schema_declares_it():
    model = LogisticRegression().fit(FRAME[["n"]].fillna(0), Y)
    inferred = si.infer_schema(model, FRAME[["n"]], overrides={"n": {"pii": True}}, strict_ranges=True)
    assert (inferred.features[0]["min"], inferred.features[0]["max"]) == (None, None)
    declared = si.infer_schema(model, FRAME[["n"]], overrides={"n": {"pii": True, "min": 0}}, strict_ranges=True)
    assert (declared.features[0]["min"], declared.features[0]["max"]) == (0, None)
    plain = si.infer_schema(model, FRAME[["n"]], strict_ranges=True)
    assert (plain.features[0]["min"], plain.features[0]["max"]) == (1.0, 6.0)


def test_the_subject_is_a_feature_and_always_pii():
    model = LogisticRegression().fit(FRAME[["n"]].fillna(0), Y)
    assert si.infer_schema(model, FRAME[["n"]], subject="n").features[0]["pii"] is True
    with pytest.raises(ValueError, match=r"^--subject 'customer_id' is not a feature of the model \(features: n\)$"):
        si.infer_schema(model, FRAME[["n"]], subject="customer_id")

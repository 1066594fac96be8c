"""A nullable feature may be left out of a record: both validation paths read it as null."""

from __future__ import annotations

import math

import pytest

from service.errors import ValidationFailed
from service.protocols import v1
from service.serving import schemas
from service.serving.inference import Target
from service.serving.validation import validate_rows

FEATURES = [
    {"name": "age", "type": "float"},
    {"name": "city", "type": "category", "categories": ["rj", "sp"], "nullable": True},
    {"name": "income", "type": "float", "nullable": True, "required": True},  # an older manifest's wording
]
SMALL, VECTORISED = 10**9, 1


def columns(payload, path):
    request = v1.decode(payload, Target("m"), max_rows=100)
    return validate_rows(request.layout, request.data, FEATURES, vectorized_min_rows=path).columns


@pytest.mark.parametrize("path", [SMALL, VECTORISED])
def test_omitted_nullable_features_are_null_on_both_paths(path):
    got = columns({"instances": [{"age": 30.0}, {"age": 40.0, "city": "sp", "income": 2.5}]}, path)
    assert got["city"].tolist() == [None, "sp"]
    assert math.isnan(got["income"][0]) and got["income"][1] == 2.5


@pytest.mark.parametrize("path", [SMALL, VECTORISED])
def test_a_column_left_out_of_inputs_is_all_null(path):
    got = columns({"inputs": {"age": [1.0, 2.0]}}, path)
    assert got["city"].tolist() == [None, None]


@pytest.mark.parametrize("path", [SMALL, VECTORISED])
def test_a_feature_that_is_not_nullable_is_still_required(path):
    with pytest.raises(ValidationFailed) as exc:
        columns({"instances": [{"city": "rj"}, {"city": "rj"}]}, path)
    assert {e["field"] for e in exc.value.details["errors"]} == {"age"}
    assert all(e["messages"] == [schemas.REQUIRED] for e in exc.value.details["errors"])


def test_the_compiled_spec_says_nullable_means_optional():
    specs = [schemas.compile_feature(i, f) for i, f in enumerate(FEATURES)]
    assert [(s.required, s.nullable) for s in specs] == [(True, False), (False, True), (False, True)]

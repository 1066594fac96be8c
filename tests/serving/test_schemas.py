import math

import pytest
from marshmallow import ValidationError

from service.protocols.v1 import load_envelope
from service.serving import schemas
from service.serving.schemas import compile_feature, convert, model_schema

FEATURES = [
    {"name": "radius", "type": "float", "min": 0.0, "max": 10.0},
    {"name": "count", "type": "int", "min": 0, "nullable": True},
    {"name": "smoker", "type": "bool", "required": False},
    {"name": "grade", "type": "category", "categories": ["a", "b", 3]},
    {"name": "note", "type": "string", "required": False, "nullable": True},
]


def spec(**feature):
    return compile_feature(0, {"name": "x", **feature})


def reject(feature_spec, value):
    with pytest.raises(ValidationError) as exc:
        convert(feature_spec, value)
    return exc.value.messages[0]


def test_defaults_are_required_and_not_nullable():
    s = spec(type="float")
    assert (s.required, s.nullable, s.lo, s.hi, s.categories) == (True, False, None, None, None)


@pytest.mark.parametrize("feature", [{"name": "x", "type": "double"}, {"name": 3, "type": "float"}, {"type": "int"}])
def test_malformed_manifest_feature_is_refused(feature):
    with pytest.raises(ValueError):
        compile_feature(0, feature)


def test_duplicate_feature_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        model_schema([{"name": "a", "type": "int"}, {"name": "a", "type": "float"}])


def test_float_accepts_numbers_and_rejects_everything_else():
    s = spec(type="float")
    assert convert(s, 1.5) == 1.5
    assert convert(s, 2) == 2.0 and type(convert(s, 2)) is float
    for value in (True, False, "1.5", [1.0], {"a": 1}):
        assert reject(s, value) == schemas.NOT_A_NUMBER
    assert reject(s, math.inf) == schemas.NOT_FINITE
    assert reject(s, math.nan) == schemas.NOT_FINITE
    assert reject(s, 10**400) == schemas.TOO_LARGE


def test_float_range_is_inclusive_and_message_uses_manifest_bounds():
    s = spec(type="float", min=0.0, max=10)
    assert convert(s, 0) == 0.0 and convert(s, 10.0) == 10.0
    assert reject(s, -0.1) == "Must be greater than or equal to 0.0 and less than or equal to 10."
    assert reject(spec(type="float", min=0.0), -1) == "Must be greater than or equal to 0.0."
    assert reject(spec(type="float", max=1.5), 2) == "Must be less than or equal to 1.5."


def test_int_accepts_integral_floats_but_never_truncates():
    s = spec(type="int")
    assert convert(s, 4) == 4
    assert convert(s, 4.0) == 4 and type(convert(s, 4.0)) is int
    for value in (4.7, True, "4", math.inf, math.nan, [4]):
        assert reject(s, value) == schemas.NOT_AN_INTEGER
    assert reject(s, 2**63) == schemas.TOO_LARGE
    assert reject(s, 1e19) == schemas.TOO_LARGE
    assert convert(s, -(2**63)) == -(2**63)


def test_int_range_with_fractional_bounds():
    s = spec(type="int", min=0.5, max=2.5)
    assert (s.lo, s.hi) == (1, 2)
    assert convert(s, 1) == 1 and convert(s, 2.0) == 2
    assert reject(s, 0) == "Must be greater than or equal to 0.5 and less than or equal to 2.5."
    assert reject(s, 3) == reject(s, 0)


def test_bool_is_json_true_or_false_only():
    s = spec(type="bool")
    assert convert(s, True) is True and convert(s, False) is False
    for value in (0, 1, "true", 1.0):
        assert reject(s, value) == schemas.NOT_A_BOOLEAN


def test_category_takes_declared_strings_or_ints():
    s = spec(type="category", categories=["a", 3])
    assert convert(s, "a") == "a" and convert(s, 3) == 3
    assert reject(s, "b") == "Must be one of: a, 3."
    assert reject(s, "3") == "Must be one of: a, 3."
    for value in (True, 3.5, float("nan"), float("inf"), ["a"]):
        assert reject(s, value) == schemas.NOT_A_CATEGORY
    assert convert(s, 3.0) == 3 and type(convert(s, 3.0)) is int  # an exact float is the integer it equals
    assert reject(s, 4.0) == "Must be one of: a, 3."
    assert convert(spec(type="category"), "anything") == "anything"


def test_long_category_lists_are_not_spelled_out():
    s = spec(type="category", categories=[str(i) for i in range(50)])
    assert reject(s, "x") == "Must be one of the 50 declared categories."


def test_string_rules():
    assert convert(spec(type="string"), "hi") == "hi"
    assert reject(spec(type="string"), 3) == schemas.NOT_A_STRING
    assert reject(spec(type="string", categories=["lo", "hi"]), "mid") == "Must be one of: lo, hi."


def test_messages_never_echo_the_value():
    secret = "sk-very-secret-value"
    for kind in ("float", "int", "bool", "category", "string"):
        try:
            convert(spec(type=kind, categories=["a"] if kind in ("category", "string") else None), secret)
        except ValidationError as exc:
            assert secret not in str(exc.messages)


def test_model_schema_is_cached_per_feature_list_identity():
    features = [dict(f) for f in FEATURES]
    assert model_schema(features) is model_schema(features)
    assert model_schema([dict(f) for f in FEATURES]) is not model_schema(features)


def test_records_schema_loads_and_reports_like_marshmallow():
    model = model_schema(FEATURES)
    good = {"radius": 1, "count": None, "grade": "a"}
    [loaded] = model.records.load([good], many=True)
    assert loaded == {"f0": 1.0, "f1": None, "f2": None, "f3": "a", "f4": None}
    with pytest.raises(ValidationError) as exc:
        model.records.load([{"radius": None, "count": 1.5, "smoker": 1, "extra": 1}], many=True)
    assert exc.value.messages == {
        0: {
            "radius": [schemas.NULL],
            "count": [schemas.NOT_AN_INTEGER],
            "smoker": [schemas.NOT_A_BOOLEAN],
            "grade": [schemas.REQUIRED],
            "extra": [schemas.UNKNOWN],
        }
    }


def test_feature_names_that_clash_with_schema_attributes_work():
    model = model_schema([{"name": "load", "type": "int"}, {"name": "fields", "type": "int"}])
    assert model.records.load([{"load": 1, "fields": 2}], many=True) == [{"f0": 1, "f1": 2}]


@pytest.mark.parametrize(
    "payload, messages",
    [
        ([], {"_schema": [schemas.INVALID_TYPE]}),
        ({}, {"_schema": [schemas.EXACTLY_ONE]}),
        ({"instances": [[1]], "inputs": {"a": [1]}}, {"_schema": [schemas.EXACTLY_ONE]}),
        ({"instances": [[1]], "extra": 1}, {"extra": [schemas.UNKNOWN]}),
        ({"instances": {"a": 1}}, {"instances": [schemas.NOT_A_LIST]}),
        ({"instances": []}, {"instances": [schemas.EMPTY]}),
        ({"instances": None}, {"instances": [schemas.NULL]}),
        ({"instances": [{}, [], {}]}, {"instances": {1: [schemas.OBJECT_EXPECTED]}}),
        ({"instances": [1, [], []]}, {"instances": {0: [schemas.ARRAY_EXPECTED]}}),
        ({"instances": [1, "a"]}, {"instances": {0: [schemas.NOT_AN_INSTANCE], 1: [schemas.NOT_AN_INSTANCE]}}),
        ({"inputs": [[1]]}, {"inputs": [schemas.NOT_A_MAPPING]}),
        ({"inputs": {}}, {"inputs": [schemas.EMPTY]}),
        ({"instances": [[1]] * 4}, {"instances": ["Must have at most 3 rows."]}),
        ({"inputs": {"a": [1] * 4}}, {"inputs": ["Must have at most 3 rows."]}),
        (
            {"instances": [[1]], "parameters": {"probabilities": "true"}},
            {"parameters": {"probabilities": [schemas.NOT_A_BOOLEAN]}},
        ),
        ({"instances": [[1]], "parameters": {"probabilities": 1}}, {"parameters": {"probabilities": [schemas.NOT_A_BOOLEAN]}}),
        ({"instances": [[1]], "parameters": {"top_k": 1}}, {"parameters": {"top_k": [schemas.UNKNOWN]}}),
    ],
)
def test_envelope_errors(payload, messages):
    with pytest.raises(ValidationError) as exc:
        load_envelope(payload, max_rows=3)
    assert exc.value.messages == messages


def test_envelope_accepts_each_layout_and_parameters():
    assert load_envelope({"instances": [[1]] * 3}, max_rows=3) == {"instances": [[1]] * 3}
    assert load_envelope({"inputs": {"a": [1]}, "parameters": {}}, max_rows=3)["parameters"]["probabilities"] is False
    loaded = load_envelope({"instances": [{}], "parameters": {"probabilities": True}}, max_rows=3)
    assert loaded["parameters"] == {"probabilities": True, "explain": False}

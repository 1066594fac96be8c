"""Personal-data features: categories checked by salted hash, and no message that names a value.

Every rule is driven through both validation paths (the marshmallow one for small batches, the
column-wise one for large) and the numeric matrix, for a manifest packaged with hashes and for
one packaged before hashing (raw categories and range, still enforced, never shown).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.errors import ValidationFailed
from service.models import pii
from service.serving.validation import validate_rows

SALT = "00" * 16
EMAILS = ["ana@example.com", "bo@example.com"]
HASHED = [{"name": "email", "type": "category", "pii": True, "categories": None,
           pii.HASHED: pii.hash_categories(SALT, EMAILS)},
          {"name": "code", "type": "category", "pii": True, pii.HASHED: pii.hash_categories(SALT, [7, 11])},
          {"name": "salary", "type": "float", "pii": True, "min": 0.0}]
OLD = [{"name": "email", "type": "category", "pii": True, "categories": EMAILS},
       {"name": "code", "type": "category", "pii": True, "categories": [7, 11]},
       {"name": "salary", "type": "float", "pii": True, "min": 1234.5, "max": 98765.25}]
GOOD = {"email": "bo@example.com", "code": 11, "salary": 5000.0}
PATHS = {"schema": 10**9, "columnwise": 1}


def refuse(features, row, path, n=3):
    rows = [GOOD] * (n - 1) + [row]
    with pytest.raises(ValidationFailed) as caught:
        validate_rows("records", rows, features, vectorized_min_rows=PATHS[path])
    return caught.value


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("features", [HASHED, OLD], ids=["hashed", "packaged-before-hashing"])
def test_declared_values_pass_by_hash_and_keep_their_type(features, path):
    batch = validate_rows("records", [GOOD, {"email": "ana@example.com", "code": 7.0, "salary": 1.0e4}], features,
                          vectorized_min_rows=PATHS[path])
    assert batch.columns["email"].tolist() == ["bo@example.com", "ana@example.com"]
    assert batch.columns["code"].tolist() == [11, 7]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("features", [HASHED, OLD], ids=["hashed", "packaged-before-hashing"])
@pytest.mark.parametrize(("field", "value", "message"), [
    ("email", "eve@example.org", "Not one of the declared categories."),
    ("email", 424242, "Not one of the declared categories."),
    ("code", "11", "Not one of the declared categories."),  # the string is not the code
    ("code", 99, "Not one of the declared categories."),
    ("email", 3.5, "Must be a string or an integer."),
    ("salary", "7777.77", "Not a valid number."),
    ("salary", -7777.77, "Outside the declared range."),
])
def test_each_refusal_names_the_field_and_no_value(features, path, field, value, message):
    error = refuse(features, {**GOOD, field: value}, path)
    assert [(e["row"], e["field"], e["messages"]) for e in error.details["errors"]] == [(2, field, [message])]
    said = error.message + json.dumps(error.details)
    for secret in [str(value), "7777", *EMAILS, "1234.5", "98765"]:
        assert secret not in said


def test_the_old_range_still_holds_without_being_said():
    error = refuse(OLD, {**GOOD, "salary": 99999.0}, "columnwise")
    assert error.details["errors"][0]["messages"] == ["Outside the declared range."]
    assert "98765" not in error.message


def test_a_numeric_matrix_gets_the_same_words():
    features = [HASHED[1], HASHED[2]]
    with pytest.raises(ValidationFailed) as caught:
        validate_rows("matrix", np.array([[7, 5.0], [99, -3.0]]), features, vectorized_min_rows=1)
    errors = {e["field"]: e["messages"] for e in caught.value.details["errors"]}
    assert errors == {"code": ["Not one of the declared categories."], "salary": ["Outside the declared range."]}


def test_hashes_depend_on_the_salt_and_the_type():
    assert pii.digest(SALT, "7") != pii.digest(SALT, 7) == pii.digest(SALT, 7.0)
    assert pii.digest(SALT, 7) != pii.digest("11" * 16, 7)
    assert pii.digest(SALT, None) is None and pii.digest(SALT, float("nan")) is None
    assert pii.digest(SALT, np.int64(7)) == pii.digest(SALT, 7)


def test_v2_metadata_keeps_the_datatype_of_hashed_codes_and_no_bound():
    from service.protocols.v2 import _feature_tensor

    code, salary = _feature_tensor(HASHED[1]), _feature_tensor(OLD[2])
    assert code["datatype"] == "INT64" and _feature_tensor(HASHED[0])["datatype"] == "BYTES"
    assert "min" not in salary["parameters"] and "max" not in salary["parameters"]

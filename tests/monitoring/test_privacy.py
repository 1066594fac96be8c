"""The PII policy of the prediction log: hashed with a key, dropped without one, never raw."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

from service.config import Config
from service.monitoring.privacy import hash_value, pii_names, redact

FEATURES = [
    {"name": "age", "type": "int", "pii": False},
    {"name": "email", "type": "string", "pii": True},
    {"name": "zip", "type": "category", "pii": True},
]


def columns() -> dict[str, np.ndarray]:
    email = np.array(["a@example.org", None, "a@example.org"], dtype=object)
    return {"age": np.array([30, 40, 50]), "email": email, "zip": np.array([1000.0, np.nan, 2000.0]),
            "undeclared": np.array([1, 2, 3])}


def test_pii_is_hashed_with_a_key_and_missing_stays_missing():
    safe = redact(FEATURES, columns(), "secret")
    assert list(safe) == ["age", "email", "zip"]  # an undeclared column is never recorded
    assert safe["age"] is columns()["age"] or np.array_equal(safe["age"], [30, 40, 50])
    expected = hmac.new(b"secret", b"a@example.org", hashlib.sha256).hexdigest()
    assert safe["email"].tolist() == [expected, None, expected]
    assert safe["zip"][1] is None and safe["zip"][0] != safe["zip"][2]
    assert hash_value(1000.0, b"secret") == safe["zip"][0]


def test_pii_is_dropped_without_a_key():
    safe = redact(FEATURES, columns(), None)
    assert list(safe) == ["age"]
    assert list(redact(FEATURES, columns(), "")) == ["age"]


def test_the_hash_depends_on_the_key_and_the_type():
    assert hash_value("x", b"k1") != hash_value("x", b"k2")
    assert hash_value(1, b"k") != hash_value(True, b"k")
    values = np.array([1, True, 1, True], dtype=object)
    safe = redact([{"name": "v", "pii": True}], {"v": values}, b"k")
    assert safe["v"].tolist() == [hash_value(1, b"k"), hash_value(True, b"k")] * 2


def test_key_and_flags_from_the_manifest_and_environment():
    # the key is read once, with the rest of the configuration
    assert Config.from_env({"PII_HASH_KEY": "abc"}).pii_hash_key == "abc"
    assert Config.from_env({"PII_HASH_KEY": ""}).pii_hash_key is None
    assert Config.from_env({}).pii_hash_key is None
    assert pii_names(FEATURES) == {"email", "zip"}

"""What of a request's inputs may be written down: the privacy policy of the prediction log.

Features flagged ``"pii": true`` in the manifest are never stored raw. With a secret key
(``PII_HASH_KEY``) each value is replaced by its HMAC-SHA256 (hex), so equal values still
match one another but cannot be read back or confirmed without the key; without a key the
feature is dropped. Columns the manifest does not describe are dropped too: nobody has said
they are safe. Missing values stay missing. Pure functions; no storage, no Flask.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson


def pii_names(features: list[dict[str, Any]]) -> frozenset[str]:
    """Return the names of the features the manifest flags as personal data."""
    return frozenset(f["name"] for f in features if f.get("pii"))


def redact(features: list[dict[str, Any]], columns: Mapping[str, np.ndarray], key: bytes | str | None) -> dict[str, np.ndarray]:
    """Return the columns that may be stored: PII hashed with ``key`` or dropped without one."""
    if isinstance(key, str):
        key = key.encode()
    safe: dict[str, np.ndarray] = {}
    for feature in features:
        name = feature["name"]
        if name not in columns:
            continue
        if not feature.get("pii"):
            safe[name] = columns[name]
        elif key:
            safe[name] = hash_column(columns[name], key)
    return safe


def hash_column(values: np.ndarray, key: bytes) -> np.ndarray:
    """Replace every present value by its keyed hash; missing values (None, NaN) stay None."""
    seen: dict[Any, str | None] = {}  # categorical PII repeats: hash each distinct value once
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(np.asarray(values).tolist()):
        cache_key = (type(value), value)  # 1 and True are equal as dict keys but hash differently
        try:
            digest = seen[cache_key]
        except KeyError:
            digest = seen[cache_key] = hash_value(value, key)
        except TypeError:  # unhashable (a list in an object column): hash without the cache
            digest = hash_value(value, key)
        out[i] = digest
    return out


def hash_value(value: Any, key: bytes) -> str | None:
    """Return the hex HMAC-SHA256 of one value's canonical text, or None when it is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value.encode() if isinstance(value, str) else orjson.dumps(value, default=str)
    return hmac.digest(key, text, hashlib.sha256).hex()

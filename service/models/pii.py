"""Personal data in a manifest: salted hashes in place of raw values, and what answers may show.

A feature flagged ``"pii": true`` never keeps a raw training value in ``manifest.json``. Its
declared categories become ``category_sha256`` (``{"salt", "digests"}``: SHA-256 of the salt
and the value's typed text) and requests are validated by hashing what they send; the reference
profile keys its category frequencies the same way. The salt is random per manifest (16 bytes,
``manifest["pii_salt"]``, repeated where a hash is checked so each part stands alone).

A salted hash stops reading values back and matching them across manifests, not guessing: a
value from a small space (a postcode, a birth date) can be found by whoever holds the manifest
by hashing every candidate with its salt. That is why no HTTP answer carries the salt or the
digests (``public_features`` keeps a count only), and why ``artifacts/`` deserves the access
control of the training data. Manifests packaged before hashing keep raw values on disk: they
still load and validate as before, and ``public_features`` strips them on the way out
(repackage such a version to remove them from disk). Pure functions; no I/O, no Flask.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable
from typing import Any

SALT_BYTES = 16
HASHED = "category_sha256"
KEY_PREFIX = "sha256:"
#: What every answer says of a pii feature's categories and range instead of listing them.
WITHHELD = "withheld: personal data"


def new_salt() -> str:
    """Return a fresh random salt (hex) for one manifest."""
    return secrets.token_hex(SALT_BYTES)


def typed_text(value: Any) -> str | None:
    """Spell a value with its JSON type, so the string "1" and the number 1 never meet; None when missing."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars, as pandas hands them over
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return f"b:{'true' if value else 'false'}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 2.0 is the code 2, as validation reads it
    if isinstance(value, (int, float)):
        return f"n:{value}"
    return f"s:{value}"


def digest(salt: str, value: Any) -> str | None:
    """Return the salted SHA-256 (hex) of one value, or None for a missing value."""
    text = typed_text(value)
    if text is None:
        return None
    return hashlib.sha256(bytes.fromhex(salt) + text.encode()).hexdigest()


def profile_key(salt: str, value: Any) -> str | None:
    """Key a category frequency of the reference profile by its salted hash."""
    found = digest(salt, value)
    return None if found is None else KEY_PREFIX + found


class HashedCategories:
    """A set of declared categories known only by their salted hashes; ``in`` hashes the value."""

    def __init__(self, salt: str, digests: Iterable[str]):
        self.salt = salt
        self.digests = frozenset(digests)

    def __contains__(self, value: Any) -> bool:
        try:
            return digest(self.salt, value) in self.digests
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        return len(self.digests)

    def issuperset(self, values: Iterable[Any]) -> bool:
        return all(value in self for value in values)


def hash_categories(salt: str, categories: list[Any]) -> dict[str, Any]:
    """Return the ``category_sha256`` entry of a feature whose categories are personal data."""
    return {"salt": salt, "digests": sorted({d for d in (digest(salt, c) for c in categories) if d is not None}),
            "text": all(isinstance(c, str) for c in categories)}


def categories_of(feature: dict[str, Any]) -> HashedCategories | frozenset[Any] | None:
    """The categories validation checks against: hashed for a protected feature, else the raw list."""
    hashed = feature.get(HASHED)
    if isinstance(hashed, dict) and isinstance(hashed.get("salt"), str):
        return HashedCategories(hashed["salt"], hashed.get("digests") or ())
    categories = feature.get("categories")
    return None if categories is None else frozenset(categories)


def protect(feature: dict[str, Any], salt: str, *, declared: Iterable[str] = ()) -> dict[str, Any]:
    """Replace a pii feature's raw categories by their hashes; drop each bound the data gave.

    ``declared`` names the keys a person wrote in ``--schema`` (a bound written there is policy,
    not somebody's value, and stays).
    """
    if not feature.get("pii"):
        return feature
    if feature.get("categories") is not None:
        feature[HASHED] = hash_categories(salt, list(feature["categories"]))
        feature["categories"] = None
    for bound in ("min", "max"):
        if bound not in declared:
            feature[bound] = None
    return feature


def public_feature(feature: dict[str, Any]) -> dict[str, Any]:
    """A copy of a feature fit for any answer: a pii feature shows no category, bound, salt or digest."""
    if not feature.get("pii"):
        return dict(feature)
    shown = {k: v for k, v in feature.items() if k != HASHED}
    categories = categories_of(feature)
    shown["categories"] = None
    shown["min"] = shown["max"] = None
    if categories is not None:
        shown["category_count"] = len(categories)
    return shown


def public_features(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every feature fit for an answer (see ``public_feature``)."""
    return [public_feature(f) for f in features]


def public_input(section: dict[str, Any] | None) -> dict[str, Any] | None:
    """A manifest's ``input`` section fit for an answer: features cleaned, notes on pii features withheld."""
    if not isinstance(section, dict):
        return section
    features = section.get("features") or []
    hidden = [f["name"] for f in features if isinstance(f, dict) and f.get("pii")]
    notes = [note if not any(repr(name) in str(note) for name in hidden)
             else "a note on a personal-data feature is withheld" for note in section.get("notes") or []]
    return {**section, "features": public_features(features), "notes": notes}

"""What a valid predict request looks like, as marshmallow 4 schemas built from the manifest.

One records schema per model lives here, built with ``Schema.from_dict`` from the
manifest's ordered features and cached per feature list (envelopes are the codecs' job:
``service.protocols``). The
rule for a single value (``convert``) and every error message are defined once here so that
the vectorised path in ``service.serving.validation`` reports exactly what marshmallow would. Messages
say what was expected and never repeat the submitted value. A personal-data (``pii``) feature's
categories are checked by salted hash (``service.models.pii``) and its messages name neither
its categories nor its bounds, which may be somebody's values in a manifest packaged before
hashing. Nothing here imports Flask.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from marshmallow import RAISE, Schema, ValidationError, fields

from service.models import artifacts, pii

KINDS = artifacts.FEATURE_TYPES
#: The kinds whose values are numbers: ranges, bins and means apply to them.
NUMERIC_KINDS = ("float", "int")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_LISTED_CATEGORIES = 20
SCHEMA_CACHE_SIZE = 128

# The one set of messages both validation paths use (marshmallow's wording where it has one).
NOT_A_NUMBER = "Not a valid number."
NOT_AN_INTEGER = "Not a valid integer."
NOT_A_BOOLEAN = "Not a valid boolean."
NOT_A_STRING = "Not a valid string."
NOT_A_CATEGORY = "Must be a string or an integer."
NOT_FINITE = "Special numeric values (nan or infinity) are not permitted."
TOO_LARGE = "Number too large."
REQUIRED = "Missing data for required field."
NULL = "Field may not be null."
UNKNOWN = "Unknown field."
INVALID_TYPE = "Invalid input type."
NOT_A_LIST = "Not a valid list."
NOT_A_MAPPING = "Not a valid mapping type."
EMPTY = "Shorter than minimum length 1."
RANGE_MIN = "Must be greater than or equal to {min}."
RANGE_MAX = "Must be less than or equal to {max}."
RANGE_ALL = "Must be greater than or equal to {min} and less than or equal to {max}."
ONE_OF = "Must be one of: {choices}."
ONE_OF_MANY = "Must be one of the {count} declared categories."
NOT_DECLARED = "Not one of the declared categories."
OUT_OF_RANGE = "Outside the declared range."
ROW_LENGTH = "Must have exactly {count} values, one per feature in schema order."
NOT_AN_INSTANCE = "Must be an object or an array."
OBJECT_EXPECTED = "Must be an object, like the other instances."
ARRAY_EXPECTED = "Must be an array, like the other instances."
COLUMN_LENGTH = "All columns must have the same length."
EXACTLY_ONE = "Provide exactly one of 'instances' or 'inputs'."
TOO_MANY_ROWS = "Must have at most {max_rows} rows."


@dataclass(frozen=True)
class FeatureSpec:
    """One manifest feature, compiled once so per-value checks do no dictionary lookups."""

    name: str
    kind: str
    index: int
    required: bool = True
    nullable: bool = False
    lo: float | int | None = None  # effective inclusive bounds (ceil/floor for int features)
    hi: float | int | None = None
    range_message: str | None = None
    categories: Container[Any] | None = None  # a frozenset, or pii.HashedCategories
    choices_message: str | None = None
    pii: bool = False

    @property
    def attr(self) -> str:
        # Feature names may collide with Schema attributes ("load", "fields"): use a safe one.
        return f"f{self.index}"


def compile_feature(index: int, feature: dict[str, Any]) -> FeatureSpec:
    """Turn one manifest feature into a spec, rejecting a malformed manifest loudly."""
    name, kind = feature.get("name"), feature.get("type")
    if not isinstance(name, str) or kind not in KINDS:
        raise ValueError(f"feature #{index} needs a string name and a type in {KINDS}")
    minimum, maximum = feature.get("min"), feature.get("max")
    lo = hi = range_message = None
    if kind in ("float", "int") and (minimum is not None or maximum is not None):
        cast: Callable[[Any], Any] = float if kind == "float" else int
        lo = None if minimum is None else cast(math.ceil(minimum) if kind == "int" else minimum)
        hi = None if maximum is None else cast(math.floor(maximum) if kind == "int" else maximum)
        if feature.get("pii"):
            range_message = OUT_OF_RANGE
        elif maximum is None:
            range_message = RANGE_MIN.format(min=minimum)
        elif minimum is None:
            range_message = RANGE_MAX.format(max=maximum)
        else:
            range_message = RANGE_ALL.format(min=minimum, max=maximum)
    categories = feature.get("categories")
    choices = choices_message = None
    if kind in ("category", "string") and feature.get("pii"):
        choices = pii.categories_of(feature)
        choices_message = None if choices is None else NOT_DECLARED
    elif kind in ("category", "string") and categories is not None:
        choices = frozenset(categories)
        if len(categories) <= MAX_LISTED_CATEGORIES:
            choices_message = ONE_OF.format(choices=", ".join(map(str, categories)))
        else:
            choices_message = ONE_OF_MANY.format(count=len(categories))
    return FeatureSpec(
        name=name,
        kind=kind,
        index=index,
        # a feature that may be null may also be left out: omitted means null
        required=bool(feature.get("required", True)) and not feature.get("nullable", False),
        nullable=bool(feature.get("nullable", False)),
        lo=lo,
        hi=hi,
        range_message=range_message,
        categories=choices,
        choices_message=choices_message,
        pii=bool(feature.get("pii")),
    )


def _check_range(spec: FeatureSpec, value: float | int) -> None:
    if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
        raise ValidationError(spec.range_message or "")


def _to_float(spec: FeatureSpec, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(NOT_A_NUMBER)
    try:
        number = float(value)
    except OverflowError:
        raise ValidationError(TOO_LARGE) from None
    if not math.isfinite(number):
        raise ValidationError(NOT_FINITE)
    _check_range(spec, number)
    return number


def _to_int(spec: FeatureSpec, value: Any) -> int:
    if isinstance(value, bool):
        raise ValidationError(NOT_AN_INTEGER)
    if isinstance(value, int):
        number = int(value)
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)  # 4.0 is an integer in JSON terms; 4.7 is not silently truncated
    else:
        raise ValidationError(NOT_AN_INTEGER)
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValidationError(TOO_LARGE)
    _check_range(spec, number)
    return number


def _to_bool(spec: FeatureSpec, value: Any) -> bool:
    if value is True or value is False:
        return value
    raise ValidationError(NOT_A_BOOLEAN)


def _to_category(spec: FeatureSpec, value: Any) -> str | int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # 2.0 is the integer 2, as for int features (numpy float rows send codes so)
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(NOT_A_CATEGORY)
    if spec.categories is not None and value not in spec.categories:
        raise ValidationError(spec.choices_message or "")
    return value


def _to_string(spec: FeatureSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(NOT_A_STRING)
    if spec.categories is not None and value not in spec.categories:
        raise ValidationError(spec.choices_message or "")
    return value


VALUE_RULES: dict[str, Callable[[FeatureSpec, Any], Any]] = {
    "float": _to_float,
    "int": _to_int,
    "bool": _to_bool,
    "category": _to_category,
    "string": _to_string,
}


def convert(spec: FeatureSpec, value: Any) -> Any:
    """Check one non-null value against its feature, returning it cleaned or raising ValidationError."""
    return VALUE_RULES[spec.kind](spec, value)


class FeatureField(fields.Field):
    """A manifest feature as a marshmallow field; the rule itself is ``convert``."""

    def __init__(self, spec: FeatureSpec):
        options: dict[str, Any] = {"required": True} if spec.required else {"load_default": None}
        super().__init__(
            data_key=spec.name,
            allow_none=spec.nullable,
            error_messages={"required": REQUIRED, "null": NULL},
            **options,
        )
        self.spec = spec

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return convert(self.spec, value)


@dataclass(frozen=True)
class ModelSchema:
    """Everything derived from one feature list: specs, positions and the records schema."""

    specs: tuple[FeatureSpec, ...]
    positions: dict[str, int]
    records: Schema
    #: every feature is a float or an int: rows of plain numbers can be checked as one matrix
    numeric: bool = False

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    @cached_property
    def float_block(self) -> tuple[tuple[FeatureSpec, ...], list[int] | slice, np.ndarray, np.ndarray]:
        """The float features, their positions and their bounds as column vectors (-inf/inf for none),
        for checking them all at once (``service.serving.matrix``); worked out once per schema.
        The positions are a slice when they are every column in order (a view, not a gather)."""
        specs = tuple(spec for spec in self.specs if spec.kind == "float")
        lo = np.array([-np.inf if spec.lo is None else spec.lo for spec in specs], dtype=np.float64)[:, None]
        hi = np.array([np.inf if spec.hi is None else spec.hi for spec in specs], dtype=np.float64)[:, None]
        positions = [spec.index for spec in specs]
        return specs, slice(None) if positions == list(range(len(self.specs))) else positions, lo, hi


_model_schemas: dict[int, tuple[list[dict[str, Any]], ModelSchema]] = {}
_model_schemas_lock = threading.Lock()


def model_schema(features: list[dict[str, Any]]) -> ModelSchema:
    """Return the schema for a manifest's feature list, built once per list object.

    The cache keys on identity (manifests are immutable once loaded) and holds the list itself,
    so an id cannot be reused by another list while its entry lives.
    """
    hit = _model_schemas.get(id(features))
    if hit is not None and hit[0] is features:
        return hit[1]
    specs = tuple(compile_feature(i, feature) for i, feature in enumerate(features))
    positions = {spec.name: spec.index for spec in specs}
    if len(positions) != len(specs):
        raise ValueError("feature names must be unique")
    records_class = Schema.from_dict({spec.attr: FeatureField(spec) for spec in specs}, name="RecordSchema")
    built = ModelSchema(specs=specs, positions=positions, records=records_class(unknown=RAISE),
                        numeric=all(spec.kind in NUMERIC_KINDS for spec in specs))
    with _model_schemas_lock:
        if len(_model_schemas) >= SCHEMA_CACHE_SIZE:
            _model_schemas.pop(next(iter(_model_schemas)), None)
        _model_schemas[id(features)] = (features, built)
    return built


class StrictBoolean(fields.Field):
    """JSON true/false only: marshmallow's Boolean would also take "yes", 1 and "on"."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value is True or value is False:
            return value
        raise ValidationError(NOT_A_BOOLEAN)

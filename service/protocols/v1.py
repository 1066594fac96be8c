"""The native v1 wire format (KServe V1 / TF Serving style): decode a body, encode an answer.

A body is ``{"instances": [...]}`` (records or rows in schema order) or ``{"inputs": {...}}``
(columns), with optional ``parameters`` (``probabilities``, ``routing_key``, ``explain``). ``decode`` checks
that envelope and returns a protocol-neutral ``PredictRequest``; ``encode`` turns an
``Answer`` into the v1 response body. The rows' values are checked later, against the model
that answers (``service.serving.validation``); only their width is sized up first, against the
model's feature count (``service.protocols.check_columns``). No Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from service.models.rollout import routing_key_from
from service.protocols import check_columns, check_keys, declared_columns
from service.serving.inference import Answer, PredictRequest, Target
from service.serving.schemas import (
    ARRAY_EXPECTED,
    EMPTY,
    EXACTLY_ONE,
    NOT_A_LIST,
    NOT_A_MAPPING,
    NOT_AN_INSTANCE,
    OBJECT_EXPECTED,
    TOO_MANY_ROWS,
    StrictBoolean,
)
from service.serving.validation import flatten_messages, raise_errors

if TYPE_CHECKING:
    from service.explain import Explanation


def decode(payload: Any, target: Target, *, max_rows: int, features: int | None = None,
           routing_header: str | None = None) -> PredictRequest:
    """Check a decoded JSON body's envelope and return the request it makes; 422 otherwise.

    With ``features`` (the model's), records or columns declaring far more columns are refused first.
    """
    if type(payload) is dict:
        for key in ("instances", "inputs"):
            check_columns(declared_columns(payload.get(key)), features, key)
        check_keys(payload, EnvelopeSchema)
        check_keys(payload.get("parameters"), ParametersSchema, "parameters")
    envelope = _plain_instances(payload, max_rows)
    if envelope is None:
        try:
            envelope = load_envelope(payload, max_rows=max_rows)
        except ValidationError as exc:
            errors = flatten_messages(exc.messages)
        else:
            errors = []
        if errors:
            raise_errors(errors, {})  # outside the except, so logs do not chain marshmallow's error
    parameters = envelope.get("parameters", {})
    if "inputs" in envelope:
        layout, data = "columns", envelope["inputs"]
    else:
        data = envelope["instances"]
        layout = "records" if type(data[0]) is dict else "rows"
    key = routing_key_from(routing_header, parameters.get("routing_key"))
    target = Target(target.name, target.version, target.label, key)
    return PredictRequest(target, layout, data, parameters.get("probabilities", False))


def _plain_instances(payload: Any, max_rows: int) -> dict[str, Any] | None:
    """The envelope of the commonest body, ``{"instances": [...]}`` alone, within the row limit and
    all records or all rows, as the schema would load it; None for anything else (the schema checks it)."""
    if type(payload) is not dict or len(payload) != 1:
        return None
    instances = payload.get("instances")
    if type(instances) is not list or not 0 < len(instances) <= max_rows:
        return None
    kinds = set(map(type, instances))
    return payload if kinds == {list} or kinds == {dict} else None


def explain_asked(payload: Any) -> bool:
    """Whether a body ``decode`` accepted asks for explanations (``"parameters": {"explain": true}``)."""
    return payload.get("parameters", {}).get("explain") is True


def encode(answer: Answer, explained: Explanation | None = None) -> dict[str, Any]:
    """Return the v1 response body: predictions in the model's own classes, ids, and what answered.

    With ``explained``, each row's ``{"base", "contributions"}`` goes in ``explanations`` (same
    order as ``ids``) and what they add up to in ``explanation``.
    """
    result = answer.result
    body: dict[str, Any] = {
        "predictions": _jsonable(result.predictions),
        "model": answer.target.name,
        "version": answer.version,
        "ids": answer.ids,
    }
    if result.probabilities is not None:
        body["classes"] = result.classes
        body["probabilities"] = result.probabilities
    if answer.fallback_from is not None:
        body["fallback"] = {"from_version": answer.fallback_from, "reason": answer.fallback_reason}
    if explained is not None:
        body["explanation"] = explained.summary()
        body["explanations"] = explained.items()
    return body


def _jsonable(values: np.ndarray) -> Any:
    """Numeric arrays go to orjson as they are; object, string and bytes arrays become lists."""
    return values.tolist() if values.dtype.kind in "OUS" else values


# -- the envelope -------------------------------------------------------------------------------


class Instances(fields.Field):
    """A non-empty list of rows that are all objects (records) or all arrays (rows)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if type(value) is not list:
            raise ValidationError(NOT_A_LIST)
        if not value:
            raise ValidationError(EMPTY)
        kinds = set(map(type, value))
        if kinds == {dict} or kinds == {list}:
            return value
        # An error is certain now, so a Python loop only builds the messages.
        expected = next((kind for kind in map(type, value) if kind in (dict, list)), None)
        message = {dict: OBJECT_EXPECTED, list: ARRAY_EXPECTED, None: NOT_AN_INSTANCE}[expected]
        raise ValidationError({i: [message] for i, item in enumerate(value) if type(item) is not expected})


class Inputs(fields.Field):
    """A non-empty mapping of column name to values; columns are checked against the model later."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise ValidationError(NOT_A_MAPPING)
        if not value:
            raise ValidationError(EMPTY)
        return value


class ParametersSchema(Schema):
    probabilities = StrictBoolean(load_default=False)
    # Read before validation to pick the canary split (service.models.rollout); checked here like the rest.
    routing_key = fields.String(validate=validate.Length(min=1, max=256))
    explain = StrictBoolean(load_default=False)  # per-row feature contributions (service.explain)


class EnvelopeSchema(Schema):
    """The predict envelope: exactly one of ``instances`` or ``inputs``, and a row limit."""

    instances = Instances()
    inputs = Inputs()
    parameters = fields.Nested(ParametersSchema, unknown=RAISE)

    def __init__(self, *, max_rows: int):
        super().__init__(unknown=RAISE)
        self.max_rows = max_rows

    @validates_schema
    def _check_shape(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("instances" in data) == ("inputs" in data):
            raise ValidationError(EXACTLY_ONE)
        if "instances" in data:
            key, n_rows = "instances", len(data["instances"])
        else:
            key, n_rows = "inputs", max((len(v) for v in data["inputs"].values() if type(v) is list), default=0)
        if n_rows > self.max_rows:
            raise ValidationError(TOO_MANY_ROWS.format(max_rows=self.max_rows), field_name=key)


_envelopes: dict[int, EnvelopeSchema] = {}


def load_envelope(payload: Any, *, max_rows: int) -> dict[str, Any]:
    """Check the request envelope, returning its fields or raising marshmallow's ValidationError."""
    schema = _envelopes.get(max_rows)
    if schema is None:
        schema = _envelopes.setdefault(max_rows, EnvelopeSchema(max_rows=max_rows))
    return schema.load(payload)

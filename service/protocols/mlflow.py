"""The MLflow scoring protocol (``/invocations``, as ``mlflow models serve`` speaks it): decode, encode.

A JSON body holds exactly one of ``dataframe_split`` (``{"columns", "data"[, "index"]}``),
``dataframe_records``, ``instances`` or ``inputs``, and optionally ``params``; a ``text/csv``
body is a header line and rows, as ``DataFrame.to_csv`` writes them. ``decode_json`` and
``decode_csv`` turn either into a protocol-neutral ``PredictRequest`` (the values are checked
later, against the model that answers); ``encode`` answers ``{"predictions": [...]}`` as
MLflow's scoring server does, and ``error_body`` gives its error shape
(``{"error_code": "BAD_REQUEST", "message": ...}``). No Flask.

Given the model's feature count, both decoders size the body's columns up first
(``service.protocols.check_columns``). A CSV's header and first row are read on their own for
that, with the ``csv`` module's C reader, which stops at the first row's end; a header naming
one column twice is refused there too, since pandas would rename the copies (``a.1``, ``a.2``,
...) in time quadratic in their number, and each copy would only come back as an unknown field.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

import pandas as pd
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from service.errors import BadRequest, ModelNotFound
from service.models.rollout import routing_key_from
from service.protocols import check_columns, check_keys, declared_columns
from service.protocols.v1 import Inputs, Instances
from service.serving.inference import Answer, PredictRequest, Target
from service.serving.schemas import ARRAY_EXPECTED, EMPTY, NOT_A_LIST, OBJECT_EXPECTED, TOO_MANY_ROWS, StrictBoolean
from service.serving.validation import flatten_messages, raise_errors

#: The body keys MLflow's scoring server reads the rows from; a body holds exactly one.
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
EXACTLY_ONE_FORMAT = "Provide exactly one of " + ", ".join(f"'{key}'" for key in FORMATS) + "."
SPLIT_ROW_LENGTH = "Must have exactly {count} values, one per column in 'columns'."
DUPLICATE_COLUMNS = "Column names must be unique."
#: MLflow's ``error_code`` for each status we answer with (``mlflow.exceptions.ERROR_CODE_TO_HTTP_STATUS``).
ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST",
               405: "BAD_REQUEST", 409: "RESOURCE_CONFLICT", 413: "BAD_REQUEST", 415: "BAD_REQUEST",
               422: "BAD_REQUEST", 500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE"}
#: pandas writes an empty header over the index column (``to_csv()`` with its default ``index=True``).
CSV_INDEX_COLUMN = "Unnamed: 0"


def default_model(configured: str | None, names: Iterable[str]) -> str:
    """Return the model ``/invocations`` serves: ``DEFAULT_MODEL``, else the only model; 404 otherwise."""
    if configured:
        return configured
    names = sorted(names)
    if len(names) == 1:
        return names[0]
    what = "no model is served" if not names else f"{len(names)} models are served ({', '.join(names)})"
    raise ModelNotFound(f"No default model: {what}; set DEFAULT_MODEL to the one /invocations should serve.",
                        details={"setting": "DEFAULT_MODEL", "models": names})


def decode_json(payload: Any, target: Target, *, max_rows: int, features: int | None = None,
                routing_header: str | None = None) -> PredictRequest:
    """Check an MLflow JSON body and return the request it makes; 422 naming each problem otherwise.

    With ``features`` (the model's), a body declaring far more columns is refused before its envelope is checked.
    """
    errors: list = []
    if type(payload) is not dict:
        errors = [(None, None, ["Must be a JSON object with one of " + ", ".join(FORMATS) + "."])]
    else:
        _check_width(payload, features)
        check_keys(payload, InvocationBody)
        check_keys(payload.get("dataframe_split"), DataframeSplit, "dataframe_split")
        try:
            body = _bodies(max_rows).load(payload)
        except ValidationError as exc:
            errors = flatten_messages(exc.messages)
    if errors:
        raise_errors(errors, {})  # outside the except, so logs do not chain marshmallow's error
    layout, data = _layout(body)
    params = body.get("params", {})
    key = routing_key_from(routing_header, params.get("routing_key"))
    return PredictRequest(Target(target.name, target.version, target.label, key), layout, data,
                          params.get("probabilities", False))


def decode_csv(body: bytes, target: Target, *, max_rows: int, features: int | None = None,
               text_columns: Iterable[str] = (), routing_header: str | None = None) -> PredictRequest:
    """Read a CSV body (header line first) into a column request; ``text_columns`` stay strings.

    Like MLflow, which reads CSV with the dtypes of the model's signature, the caller names the
    columns that hold text so ``"007"`` is not read as the number 7. With ``features`` (the
    model's), a header declaring far more columns is refused before pandas reads anything.
    """
    try:
        names, first_row = _csv_widths(body)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _unreadable(exc) from None
    unnamed_index = 1 if names[:1] == [""] else 0  # the index column, as to_csv() writes it: dropped below
    check_columns(max(len(names), first_row) - unnamed_index, features, "text/csv")
    if len(set(names)) != len(names):
        raise_errors([(None, "text/csv", [DUPLICATE_COLUMNS])], {})
    try:  # one row past the limit is enough to refuse a body for its rows
        frame = pd.read_csv(io.BytesIO(body), dtype=dict.fromkeys(text_columns, str), encoding="utf-8",
                            nrows=max_rows + 1)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise _unreadable(exc) from None
    if len(frame.columns) and frame.columns[0] == CSV_INDEX_COLUMN:
        frame = frame.iloc[:, 1:]
    if len(frame) == 0:
        raise_errors([(None, "text/csv", [EMPTY])], {})
    if len(frame) > max_rows:
        raise_errors([(None, "text/csv", [TOO_MANY_ROWS.format(max_rows=max_rows)])], {})
    columns = {str(name): _json_values(frame[name]) for name in frame.columns}
    return PredictRequest(Target(target.name, target.version, target.label, routing_key_from(routing_header, None)),
                          "columns", columns)


def encode(answer: Answer) -> dict[str, Any]:
    """Return MLflow's response body: ``predictions`` first, then our extras (ids, probabilities)."""
    result = answer.result
    predictions = result.predictions
    body: dict[str, Any] = {"predictions": predictions.tolist() if predictions.dtype.kind in "OUS" else predictions,
                            "ids": answer.ids}
    if result.probabilities is not None:
        body["classes"] = result.classes
        body["probabilities"] = result.probabilities
    return body


def error_body(status: int, message: str, code: str, details: Any) -> dict[str, Any]:
    """Return MLflow's error shape for one of our errors; our code and details ride along."""
    return {"error_code": ERROR_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"),
            "message": message, "code": code, "details": details}


def _unreadable(exc: Exception) -> BadRequest:
    reason = "the body is not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc).splitlines()[0][:200]
    return BadRequest(f"The CSV body could not be read: {reason}. Send a header line, then one line per row, "
                      "as DataFrame.to_csv() writes them.", details={"content_type": "text/csv"})


def _csv_widths(body: bytes) -> tuple[list[str], int]:
    """The header's fields and the first row's count, as pandas reads them (blank lines skipped, a UTF-8 BOM dropped).

    The first row counts because pandas makes each field it has beyond the header a level of the
    index (R's row names are one): a row of a million fields under a short header took it minutes.
    The text is decoded as the reader asks for it, so this costs those two lines, not the body.
    """
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", newline="")
    records = (record for record in csv.reader(text) if len(record) > 1 or (record and record[0].strip(" \t")))
    return next(records, []), len(next(records, []))


def _check_width(payload: dict[str, Any], features: int | None) -> None:
    """Refuse a body whose format declares far more columns than the model has (before marshmallow sees it)."""
    split = payload.get("dataframe_split")
    if type(split) is dict and type(split.get("columns")) is list:
        check_columns(len(split["columns"]), features, "dataframe_split.columns")
    for key in FORMATS[1:]:
        check_columns(declared_columns(payload.get(key)), features, key)


def _json_values(column: pd.Series) -> list[Any]:
    """A CSV column as JSON values: Python numbers, strings and booleans; a missing cell is None."""
    if column.hasnans:
        return column.astype(object).where(column.notna(), None).tolist()
    return column.tolist()


def _layout(body: dict[str, Any]) -> tuple[str, Any]:
    """Return (layout, data) for the one format the body used."""
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if "columns" not in split:
            return "rows", split["data"]  # no names: values in the model's feature order
        # C-level transpose: rows were checked to have one value per column
        return "columns", dict(zip(split["columns"], map(list, zip(*split["data"], strict=True)), strict=True))
    if "dataframe_records" in body:
        return "records", body["dataframe_records"]
    data = body.get("instances", body.get("inputs"))
    if type(data) is dict:
        return "columns", data
    return ("records" if type(data[0]) is dict else "rows"), data


# -- the body ------------------------------------------------------------------------------------


class Records(Instances):
    """A non-empty list of objects (``dataframe_records``: pandas' ``orient="records"``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        rows = super()._deserialize(value, attr, data, **kwargs)
        if type(rows[0]) is not dict:
            raise ValidationError(OBJECT_EXPECTED)
        return rows


class Rows(fields.Field):
    """A non-empty list of arrays (``dataframe_split.data``: pandas' ``orient="split"``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if type(value) is not list:
            raise ValidationError(NOT_A_LIST)
        if not value:
            raise ValidationError(EMPTY)
        if set(map(type, value)) != {list}:
            raise ValidationError({i: [ARRAY_EXPECTED] for i, row in enumerate(value) if type(row) is not list})
        return value


class InstancesOrInputs(fields.Field):
    """``inputs``: columns (an object of lists) or, as in TF Serving's row format, a list of rows."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if type(value) is dict:
            return Inputs().deserialize(value)
        return Instances().deserialize(value)


class Index(fields.Field):
    """``dataframe_split.index``: accepted and ignored, as pandas' split orient writes it; a list, never read item by item."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if type(value) is not list:
            raise ValidationError(NOT_A_LIST)
        return value


class DataframeSplit(Schema):
    columns = fields.List(fields.String(), validate=validate.Length(min=1))
    data = Rows(required=True)
    index = Index()

    @validates_schema
    def _check_width(self, split: dict[str, Any], **kwargs: Any) -> None:
        columns = split.get("columns")
        if columns is None or "data" not in split:
            return
        if len(set(columns)) != len(columns):
            raise ValidationError(DUPLICATE_COLUMNS, field_name="columns")
        width = len(columns)
        if set(map(len, split["data"])) != {width}:
            message = SPLIT_ROW_LENGTH.format(count=width)
            raise ValidationError({i: [message] for i, row in enumerate(split["data"]) if len(row) != width},
                                  field_name="data")


class ParamsSchema(Schema):
    """``params``: the ones we use are checked; others are ignored, as MLflow ignores params a model does not take."""

    probabilities = StrictBoolean(load_default=False, metadata={"description": "Also answer class probabilities."})
    routing_key = fields.String(validate=validate.Length(min=1, max=256),
                                metadata={"description": "Keeps a caller on one side of a canary split."})


class InvocationBody(Schema):
    """An MLflow scoring request: exactly one of the row formats, and a row limit."""

    dataframe_split = fields.Nested(DataframeSplit, unknown=RAISE)
    dataframe_records = Records()
    instances = Instances()
    inputs = InstancesOrInputs()
    params = fields.Nested(ParamsSchema, unknown=EXCLUDE)

    def __init__(self, *, max_rows: int = 10_000):
        super().__init__(unknown=RAISE)
        self.max_rows = max_rows

    @validates_schema
    def _check_shape(self, body: dict[str, Any], **kwargs: Any) -> None:
        present = [key for key in FORMATS if key in body]
        if len(present) != 1:
            raise ValidationError(EXACTLY_ONE_FORMAT)
        key = present[0]
        data = body[key]["data"] if key == "dataframe_split" else body[key]
        n_rows = max((len(v) for v in data.values() if type(v) is list), default=0) if type(data) is dict else len(data)
        if n_rows > self.max_rows:
            raise ValidationError(TOO_MANY_ROWS.format(max_rows=self.max_rows), field_name=key)


_bodies_by_limit: dict[int, InvocationBody] = {}


def _bodies(max_rows: int) -> InvocationBody:
    schema = _bodies_by_limit.get(max_rows)
    if schema is None:
        schema = _bodies_by_limit.setdefault(max_rows, InvocationBody(max_rows=max_rows))
    return schema

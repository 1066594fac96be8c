"""Wire codecs: each turns its payload into one protocol-neutral request and an answer back into its body.

``parse_json`` is the one way a codec reads JSON. Given ``max_containers`` it first refuses a
body with more arrays and objects than any request within the row limit can hold, before a
single Python object is built: parsed, a 16 MiB body of empty rows (``[[],[],...]``) is five
million lists, half a gigabyte of worker memory and seconds of CPU, all to answer 422 in the
end. Counting brackets runs at C speed; only when that upper bound is over the budget are the
brackets inside strings told apart (a compiled regex drops the strings), so a legitimate body
never pays more than two ``bytes.count``. Nesting depth needs no check of ours: orjson refuses
past 1024 levels by itself, and the container count bounds memory whatever the depth.

``check_columns`` bounds a body's width the same way, from the model rather than a setting: a
CSV header, a ``columns`` list, a record's keys or a list of tensors declaring far more columns
than the model has features is refused before a DataFrame is built or a row validated. Each
declared column costs the envelope checks, pandas and validation tens of microseconds, and a
header repeating one name cost pandas time quadratic in its length (renaming ``a.1``,
``a.2``, ...), so a 100 KB header held a worker for half a minute. A few unknown columns still
reach validation, which names each of them. ``check_keys`` does the same for an envelope's own
objects (the body, ``parameters``, a tensor): past what one report shows, unknown keys are
counted with a set difference and the first of them named, instead of marshmallow and the
report handling each (200 000 of them cost 1.6 s of CPU).
"""

from __future__ import annotations

import heapq
import re
from functools import cache
from typing import Any

import orjson
from marshmallow import Schema

from service.errors import InvalidJSON, TooManyElements
from service.serving.schemas import UNKNOWN
from service.serving.validation import MAX_REPORTED_ERRORS, raise_errors

#: A JSON string, escapes included. Possessive, and an unterminated string runs to the end of the
#: body, so every attempt that starts at a quote matches: the scan stays linear on any input.
STRING_RE = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
#: Arrays and objects a request may hold beyond its rows: the envelope, ``parameters``, ``outputs``.
ENVELOPE_CONTAINERS = 1024
#: Columns a body may declare beyond twice the model's features: pandas' index column and a few
#: misspelt names, each reported by name by validation rather than refused wholesale here.
SPARE_COLUMNS = 16


def container_budget(max_rows: int, width: int, *, per_feature: bool = False) -> int:
    """The most arrays and objects a request within ``max_rows`` rows of ``width`` features can hold.

    A row is at most one array or object (records, rows), a column one array (columns layout).
    With ``per_feature`` (Open Inference Protocol) each feature may be its own tensor whose data
    nests one array per row (shape ``[rows, 1]``): with the tensor's object, its shape, its data
    and its parameters, every feature may bring ``max_rows + 4``.
    """
    if per_feature:
        return (max_rows + 4) * (width + 1) + ENVELOPE_CONTAINERS
    return max_rows + width + ENVELOPE_CONTAINERS


def count_containers(body: bytes | memoryview, budget: int) -> int:
    """Count the arrays and objects of a JSON text, exactly when the cheap upper bound exceeds ``budget``."""
    upper = body.count(b"[") + body.count(b"{")
    if upper <= budget:
        return upper
    outside = STRING_RE.sub(b"", body)
    return outside.count(b"[") + outside.count(b"{")


def check_containers(body: bytes | memoryview, budget: int, max_rows: int, limit: str = "MAX_BATCH_ROWS") -> None:
    """Refuse (422, ``TooManyElements``) a body holding more arrays and objects than ``budget``.

    ``limit`` names the row limit (``max_rows``) the budget comes from, for the caller to read.
    """
    count = count_containers(body, budget)
    if count > budget:
        message = f"Must hold at most {budget} arrays and objects ({max_rows} rows at most); found {count}."
        raise TooManyElements(f"The body holds more rows (arrays and objects) than {limit} allows.",
                              details={"limit": limit, "max_rows": max_rows, "max_containers": budget,
                                       "containers": count, "error_count": 1,
                                       "errors": [{"row": None, "field": "body", "messages": [message]}]})


def column_budget(features: int) -> int:
    """The most columns a body may declare for a model of ``features`` features: twice as many, and 16 more."""
    return 2 * features + SPARE_COLUMNS


def declared_columns(data: Any) -> int:
    """The columns a decoded layout declares: a mapping's keys (columns), else its widest record's (records).

    Rows declare none (their length is checked against the schema, which is cheap); neither does
    anything that is not a layout, which the envelope check refuses in its own words.
    """
    if type(data) is dict:
        return len(data)
    if type(data) is list and data and set(map(type, data)) == {dict}:
        return max(map(len, data))
    return 0


def check_columns(count: int, features: int | None, field: str) -> None:
    """Refuse (422, ``TooManyElements``) ``count`` columns declared at ``field`` past ``column_budget(features)``.

    ``features`` is the model's feature count (the widest of its loaded versions); None checks nothing.
    """
    if features is None:
        return
    budget = column_budget(features)
    if count > budget:
        message = f"Must declare at most {budget} columns (the model has {features} features); found {count}."
        raise TooManyElements(f"The body declares more columns than the model has features: {count} at '{field}', "
                              f"at most {budget} accepted.",
                              details={"limit": "features", "features": features, "max_columns": budget,
                                       "columns": count, "error_count": 1,
                                       "errors": [{"row": None, "field": field, "messages": [message]}]})


def check_keys(obj: Any, schema: type[Schema], field: str | None = None) -> None:
    """Refuse (422) an object at ``field`` holding more keys unknown to ``schema`` than one report shows.

    The report names the first of them in sorted order and counts them all; fewer are left to
    the schema, which names each one with the other problems it finds.
    """
    if type(obj) is not dict or len(obj) <= MAX_REPORTED_ERRORS:
        return
    unknown = obj.keys() - _known_keys(schema)
    if len(unknown) > MAX_REPORTED_ERRORS:
        shown = heapq.nsmallest(MAX_REPORTED_ERRORS, unknown)
        raise_errors([(None, key if field is None else f"{field}.{key}", [UNKNOWN]) for key in shown], {},
                     count=len(unknown))


@cache
def _known_keys(schema: type[Schema]) -> frozenset[str]:
    # the class's fields (some schemas take arguments to build), under the keys they load from
    declared = schema._declared_fields  # noqa: SLF001  (marshmallow's per-class field table)
    return frozenset(name if spec.data_key is None else spec.data_key for name, spec in declared.items())


def parse_json(body: bytes, *, max_containers: int | None = None, max_rows: int | None = None,
               limit: str = "MAX_BATCH_ROWS") -> Any:
    """Parse a JSON document; 400 (InvalidJSON) when it is empty or malformed.

    With ``max_containers``, a body holding more arrays and objects is refused (422) unparsed.
    """
    if not body:
        raise InvalidJSON("The request body is empty.")
    if max_containers is not None:
        check_containers(body, max_containers, max_rows if max_rows is not None else max_containers, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message gives a position and the problem, never the offending text
        raise InvalidJSON(details={"reason": str(exc).split(":", 1)[0], "position": exc.pos}) from None

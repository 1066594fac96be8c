"""Bodies in and JSON out for the HTTP layer: content type, size, parsing, and orjson responses."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Request, Response, current_app, request
from marshmallow import RAISE, Schema, ValidationError

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from service.protocols import parse_json

JSON_MIMETYPES = ("application/json",)
JSON_CONTENT_TYPE = "application/json"  # what Werkzeug writes for this mimetype (it adds no charset)
# Before a 413 the rest of the body is read and thrown away, so the connection closes cleanly: a
# sync worker that closes with unread bytes makes the kernel send a reset, and a proxy still
# sending the body turns that reset into a 502 instead of our 413. Draining is bounded by this
# many times the limit (a body larger still is cut off; the proxy in front refuses those first).
DRAIN_FACTOR = 2
DRAIN_CHUNK = 64 * 1024


def read_body() -> bytes:
    """The whole request body; 413 past MAX_CONTENT_LENGTH, whether the length is declared or not."""
    return _read_body(request._get_current_object(), current_app.config.get("MAX_CONTENT_LENGTH"))


def _read_body(request: Request, limit: int | None) -> bytes:
    environ = request.environ
    declared = request.content_length
    if declared is not None and (limit is None or declared <= limit) and "HTTP_TRANSFER_ENCODING" not in environ:
        # a declared length within the limit: one read from the server's stream, as Werkzeug's would end
        stream = environ["wsgi.input"]
        body = stream.read(declared) if declared else b""
        while len(body) < declared:  # a server may hand the body over in parts
            part = stream.read(declared - len(body))
            if not part:
                raise BadRequest(f"The body ended after {len(body)} of the {declared} bytes its Content-Length "
                                 "declared (the client went away or sent a wrong length).",
                                 details={"field": "Content-Length", "declared": declared, "received": len(body)})
            body += part
        return body
    body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH when the length is declared
    if request.content_length is None and limit is not None and len(body) >= limit:
        # a chunked body is cut off at the limit rather than refused: refuse it here
        raise PayloadTooLarge(details={"limit_bytes": limit})
    return body


def read_json(max_containers: int | None = None, *, max_rows: int | None = None,
              limit: str = "MAX_BATCH_ROWS") -> Any:
    """Parse the request body as JSON; 415 for another content type, 413 past the limit, 400 for bad JSON.

    With ``max_containers``, 422 unparsed for a body holding more arrays and objects (``parse_json``);
    ``limit`` names the row limit (``max_rows``, by default MAX_BATCH_ROWS's) it comes from.
    """
    req, app = request._get_current_object(), current_app._get_current_object()  # one context lookup each
    if req.mimetype not in JSON_MIMETYPES:
        raise UnsupportedMediaType(details={"expected": "application/json"})
    if max_containers is not None and max_rows is None:
        max_rows = app.extensions["limits"].max_rows
    body = _read_body(req, app.config.get("MAX_CONTENT_LENGTH"))
    return parse_json(body, max_containers=max_containers, max_rows=max_rows, limit=limit)


def drain_body(limit: int | None) -> int:
    """Read and discard what is left of the request body, up to ``DRAIN_FACTOR * limit`` bytes; return the count."""
    cap = DRAIN_FACTOR * (limit or 0)
    declared = request.content_length
    if cap <= 0 or (declared is not None and declared > cap):
        return 0  # too big to be worth reading: the connection is closed either way
    # the raw WSGI stream: Werkzeug's own refuses to read past MAX_CONTENT_LENGTH
    stream = request.environ.get("wsgi.input")
    drained = 0
    try:
        while stream is not None and drained < cap:
            chunk = stream.read(min(DRAIN_CHUNK, cap - drained))
            if not chunk:
                break
            drained += len(chunk)
    except (OSError, ValueError):  # the client went away: nothing left to protect
        pass
    return drained


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | list[tuple[str, str]] | None = None) -> Response:
    """Serialise with orjson (numpy arrays included) into a Flask response."""
    payload = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    # the finished Content-Type and each header added as it is: no mimetype lookup, no mapping walked generically
    response = Response(payload, status, content_type=JSON_CONTENT_TYPE)
    if headers:  # a mapping, or (name, value) pairs
        for name, value in headers.items() if isinstance(headers, dict) else headers:
            response.headers.add(name, value)
    return response


def int_arg(name: str, *, low: int, high: int, default: int | None = None) -> int | None:
    """Read a whole-number query parameter within [low, high]; 422 naming it otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        message = f"Must be a whole number from {low} to {high}."
        raise ValidationFailed(f"{name}: {message}", details={"errors": [{"row": None, "field": name,
                                                                          "messages": [message]}], "error_count": 1})
    return int(raw)


def load_body(schema: Schema, payload: Any) -> dict[str, Any]:
    """Load a JSON object body with ``schema`` (unknown fields refused); 422 naming each bad field."""
    if not isinstance(payload, dict):
        raise validation_failed({"body": ["Must be a JSON object."]}, "the body")
    try:
        return schema.load(payload, unknown=RAISE)
    except ValidationError as exc:
        raise validation_failed(exc.normalized_messages(), "the body") from None


def validation_failed(messages: Any, what: str = "the request") -> ValidationFailed:
    """Turn marshmallow's nested messages into the one error shape, one entry per leaf field."""
    errors = [{"row": next((p for p in path if isinstance(p, int)), None), "field": ".".join(map(str, path)),
               "messages": leaf} for path, leaf in sorted(_leaves(messages), key=lambda e: str(e[0]))]
    first = errors[0]["field"] if errors else "?"
    return ValidationFailed(f"{len(errors)} invalid value(s) in {what}; first: {first}",
                            details={"errors": errors[:50], "error_count": len(errors)})


def _leaves(messages: Any, path: tuple = ()) -> list[tuple[tuple, list[str]]]:
    if isinstance(messages, dict):
        return [leaf for key, value in messages.items() for leaf in _leaves(value, (*path, key))]
    return [(path, messages if isinstance(messages, list) and all(isinstance(m, str) for m in messages)
             else [str(messages)])]

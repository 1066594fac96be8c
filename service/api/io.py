"""JSON in and out for the HTTP layer: content type, size, parsing, and orjson responses."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request

from service.errors import InvalidJSON, UnsupportedMediaType

JSON_MIMETYPES = ("application/json",)


def read_json() -> Any:
    """Parse the request body as JSON; 415 for another content type, 400 for bad JSON."""
    if request.mimetype not in JSON_MIMETYPES:
        raise UnsupportedMediaType(details={"expected": "application/json"})
    body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not body:
        raise InvalidJSON("The request body is empty.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message gives a position and the problem, never the offending text
        raise InvalidJSON(details={"reason": str(exc).split(":", 1)[0], "position": exc.pos}) from None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise with orjson (numpy arrays included) into a Flask response."""
    payload = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(payload, status=status, headers=headers, mimetype="application/json")

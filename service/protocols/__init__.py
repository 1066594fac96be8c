"""Wire codecs: each turns its payload into one protocol-neutral request and an answer back into its body."""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import InvalidJSON


def parse_json(body: bytes) -> Any:
    """Parse a JSON document; 400 (InvalidJSON) when it is empty or malformed."""
    if not body:
        raise InvalidJSON("The request body is empty.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message gives a position and the problem, never the offending text
        raise InvalidJSON(details={"reason": str(exc).split(":", 1)[0], "position": exc.pos}) from None

"""Turn every failure into the one JSON error shape; never a stack trace, never the input."""

from __future__ import annotations

import logging
import sqlite3

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from service.api.io import drain_body, json_response
from service.errors import ServiceError, StoreUnavailable

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: ("bad_request", "The request is malformed."),
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "The method is not allowed here."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as application/json."),
}


def register_error_handlers(app: Flask) -> None:
    """Install one handler per failure family on the app (routing errors never reach blueprints)."""
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(sqlite3.Error, _store_error)  # both backends raise sqlite3.Error
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    app.after_request(_drain_refused_body)


def _drain_refused_body(response: Response) -> Response:
    """Read what is left of a refused request's body before answering (bounded), whatever refused it.

    A server that answers and closes while the client is still sending makes a proxy see a reset
    instead of the answer: Apache turned an early 401, 415 or 413 into a 502. After a view that
    read its body this reads nothing.
    """
    if response.status_code >= 400 and (request.content_length or request.headers.get("Transfer-Encoding")):
        drain_body(current_app.config.get("MAX_CONTENT_LENGTH"))
    return response


def _service_error(error: ServiceError) -> Response:
    if error.status >= 500:
        log.error("request failed", exc_info=error.__cause__ or error,
                  extra={"code": error.code, "details": error.details})
    return json_response(error.to_dict(), error.status, error.headers)


def _store_error(error: sqlite3.Error) -> Response:
    log.error("database unavailable", exc_info=error)
    return _service_error(StoreUnavailable())


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    code, message = HTTP_CODES.get(status, (f"http_{status}", error.name))
    details = {}
    headers = {}
    if status == 405 and getattr(error, "valid_methods", None):
        allowed = ", ".join(sorted(error.valid_methods))
        headers["Allow"] = allowed
        details["allowed_methods"] = sorted(error.valid_methods)
    if status == 413:
        if error.description and "limit" in str(error.description):
            details["reason"] = str(error.description)
    return json_response({"error": {"code": code, "message": message, "details": details}}, status, headers)


def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error")
    body = ServiceError().to_dict()
    return json_response(body, 500)

"""Run work once a response's last byte has been handed to the server: ``call_on_close``.

The observer spools each answered request's record there, on the worker's thread but after the
client has its answer, so recording adds nothing to the response's latency and a worker killed
afterwards has already written what it answered.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, after_this_request, has_request_context


def after_response(callback: Callable[[], None]) -> bool:
    """Call ``callback`` when the current response is closed; False outside a request."""
    if not has_request_context():
        return False

    @after_this_request
    def register(response: Response) -> Response:
        response.call_on_close(callback)
        return response

    return True

"""Request ids: taken from ``X-Request-ID`` when sane, else made; echoed on every response.

A made id is 32 hex digits: 16 drawn at random once per process (again in every forked child),
then a 64-bit counter started at a random value. Ids are as unique as 128 random bits would be in
practice (two processes clash only when their 64 random bits do), at no system call per request:
reading the kernel's random source cost a few microseconds a request in a worker.
"""

from __future__ import annotations

import itertools
import os

from flask import Flask, Response, g, request

from service.logs import REQUEST_ID_HEADER, REQUEST_ID_RE, request_id_var

#: Where the WSGI environ holds the request's X-Request-ID header (read there, not through a Headers view).
ENVIRON_KEY = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


class IdSource:
    """Make request ids: this process's random prefix and the next value of its counter."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)  # a forked worker never repeats its parent's ids

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        # from below 2**63: 2**63 ids at least before the counter needs a seventeenth digit
        self.counter = itertools.count(int.from_bytes(os.urandom(8), "big") >> 1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"  # next() on a count is atomic under the GIL


new_request_id = IdSource()


def sane_request_id(value: str | None) -> str:
    """Return ``value`` when it is safe to reuse as a request id, else a fresh one."""
    if value and REQUEST_ID_RE.fullmatch(value):
        return value
    return new_request_id()


def init_app(app: Flask) -> None:
    """Give every request an id, expose it to logs and ``g``, and echo it on every response."""
    # ``g`` and ``request`` are looked up once per hook: each proxy access costs a context lookup.
    def take_request_id() -> None:
        ctx_g = g._get_current_object()
        ctx_g.request_id = request_id = sane_request_id(request.environ.get(ENVIRON_KEY))
        ctx_g._request_id_token = request_id_var.set(request_id)

    def set_header(response: Response) -> Response:
        ctx_g = g._get_current_object()
        request_id = getattr(ctx_g, "request_id", None)
        if request_id is None:
            # An earlier before_request hook failed before ours ran; the response still gets an id.
            ctx_g.request_id = request_id = new_request_id()
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    def forget_request_id(exc: BaseException | None) -> None:
        token = g.pop("_request_id_token", None)
        if token is not None:
            try:
                request_id_var.reset(token)
            except ValueError:  # set in another context (e.g. a copied one); clearing is enough
                request_id_var.set(None)

    # First in line, so other before_request hooks (auth, limits) already log with the id;
    # after_request and teardown functions run in reverse, so index 0 makes ours the last:
    # the header lands on the final response and the id outlives the other teardowns.
    app.before_request_funcs.setdefault(None, []).insert(0, take_request_id)
    app.after_request_funcs.setdefault(None, []).insert(0, set_header)
    app.teardown_request_funcs.setdefault(None, []).insert(0, forget_request_id)

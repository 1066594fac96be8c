"""Request ids: taken from ``X-Request-ID`` when sane, else made (``service.logs.IdSource``); echoed on every response."""

from __future__ import annotations

from flask import Flask, Response, g, request

from service.logs import REQUEST_ID_HEADER, new_request_id, request_id_var, sane_request_id

#: Where the WSGI environ holds the request's X-Request-ID header (read there, not through a Headers view).
ENVIRON_KEY = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


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

"""Refuse what a browser can be tricked into sending: cross-site writes and DNS-rebound reads.

* A request's ``Host`` must be a name this server answers to (``ALLOWED_HOSTS``): a page
  whose own domain an attacker re-points at 127.0.0.1 (DNS rebinding) sends its own name as
  Host, so it cannot read an API that is open on loopback. Set, the list applies to every
  request; unset, the default (loopback names and HOST) applies to requests that come straight
  to the server. Proxied requests then are the proxy's to filter (its server names): they are
  never open, and a rebound page has no credentials for the real site.
* A state-changing request (POST, PUT, PATCH, DELETE) must declare ``Content-Type:
  application/json``, even with no body. An HTML form on another site can only send form or
  text bodies, and ``fetch`` with any other type makes the browser ask first (a CORS
  preflight, which this server never grants). It is also refused when the browser marks it
  ``Sec-Fetch-Site: cross-site``/``same-site`` or its ``Origin`` is not this server.

A view that takes another body type says so with ``@accepts("text/csv")``; the types a
cross-site form can send are never allowed. No authentication here: ``service.api.auth``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, request

from service.api.proxy import is_direct_request
from service.config import Config
from service.errors import CrossSiteRequest, HostNotAllowed, UnsupportedMediaType

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = ("application/json",)
#: The bodies a cross-site ``<form>`` (or a no-preflight ``fetch``) can send: never accepted for a change.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain", ""})
REFUSED_FETCH_SITES = frozenset({"cross-site", "same-site"})
DEFAULT_PORTS = {"http": "80", "https": "443"}

V = TypeVar("V", bound=Callable)


def accepts(*mimetypes: str) -> Callable[[V], V]:
    """Decorate a view that takes bodies of ``mimetypes`` (instead of JSON only) on state-changing methods."""
    unsafe = FORM_TYPES & set(mimetypes)
    if unsafe:
        raise ValueError(f"{', '.join(sorted(unsafe))} can be sent by a cross-site form; accept another type")

    def decorator(view: V) -> V:
        view.accepted_body_types = tuple(mimetypes)  # type: ignore[attr-defined]
        return view

    return decorator


def init_app(app: Flask, config: Config) -> None:
    """Check every request's Host and every state-changing request's origin and content type."""
    app.extensions["served_hosts"] = (frozenset(config.served_hosts), bool(config.allowed_hosts))
    app.before_request(check_request)


def check_request() -> None:
    """Raise ``HostNotAllowed``, ``CrossSiteRequest`` or ``UnsupportedMediaType`` for a request to refuse."""
    app, req = current_app._get_current_object(), request._get_current_object()  # one context lookup each
    environ = req.environ
    served, explicit = app.extensions["served_hosts"]
    if "*" not in served and _hostname(req.host) not in served and (explicit or is_direct_request()):
        raise HostNotAllowed(details={"host": req.host[:255]})
    if req.method not in STATE_CHANGING or req.routing_exception is not None:
        return  # nothing changes on a read, or on a URL that does not exist (it answers 404/405)
    # the two headers straight from the WSGI environ, as ``request.headers`` would give them
    site = environ.get("HTTP_SEC_FETCH_SITE", "").strip().lower()
    if site in REFUSED_FETCH_SITES:
        raise CrossSiteRequest(details={"sec_fetch_site": site})
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None and _netloc_of_origin(origin) != _netloc(req.host):
        raise CrossSiteRequest(f"The request's Origin is not this server ({req.host[:255]}).",
                               details={"origin": origin[:255]})
    view = app.view_functions.get(req.endpoint or "")
    allowed = getattr(view, "accepted_body_types", JSON_TYPES)
    if req.mimetype not in allowed:
        raise UnsupportedMediaType(f"Send Content-Type: {' or '.join(allowed)} (even with an empty body).",
                                   details={"expected": allowed[0] if len(allowed) == 1 else list(allowed)})


@functools.lru_cache(maxsize=256)  # a server is called by few names: each Host is taken apart once
def _hostname(host: str) -> str:
    """Return a Host header's name without port or IPv6 brackets, lower case, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _netloc(host: str) -> str:
    """Return ``host`` (a Host header or an Origin's host) lower case, without a default port (80, 443).

    Either default port is dropped: behind a TLS proxy that does not say so, the request is
    http while the browser's Origin is https, and a page on the same host is not cross-site.
    """
    host = host.strip().lower()
    name, sep, port = host.rpartition(":")
    if sep and "]" not in port and port in DEFAULT_PORTS.values():
        return name
    return host


def _netloc_of_origin(origin: str) -> str | None:
    """Return an Origin's host[:port] as ``_netloc`` writes it; ``None`` for ``null`` or anything not http(s)."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        return None
    return _netloc(parts.netloc)

"""The HTTP side of API keys: ``init_app`` loads the policy, ``require_scope`` guards a view.

Without ``API_KEYS_FILE``, predict and read need no key from a local request (straight from
loopback, no proxy: ``service.api.proxy.is_local``); admin always needs a key, from the local
admin keys file that ``make serve`` creates (``python -m service keys ensure-local-admin``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import Flask, current_app, g, request

from service.api.proxy import NO_PROXIES, is_local, trusted_proxies, why_not_local
from service.config import Config
from service.errors import ServiceError, Unauthorized
from service.security.keys import SCOPES, ApiKey, Policy, credentials_from_headers, load_policy

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def init_app(app: Flask, config: Config) -> None:
    """Apply the startup policy and keep it on ``app.extensions["security"]``."""
    app.extensions["security"] = load_policy(config)


def require_scope(scope: str, *others: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a view so it runs only for a key with ``scope`` (or one of ``others``); sets ``g.api_key``
    (the ``ApiKey``, whose own rate limits ``service.api.limits`` reads) and ``g.key_id``.

    In open mode a local request to an open scope runs without a key (both are None).
    """
    for name in (scope, *others):
        if name not in SCOPES:
            raise ValueError(f"unknown scope {name!r}: choose from {', '.join(SCOPES)}")

    scopes = (scope, *others)

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            extensions = current_app.extensions  # one context lookup for the app, one for ``g``
            if "security" not in extensions:
                # Fail closed: a forgotten init_app must not turn into an open server.
                raise RuntimeError("service.api.auth.init_app(app, config) was not called")
            try:
                key = _authorize(extensions["security"], scopes, extensions)
            except ServiceError as exc:
                _audit_denied(exc, scopes)
                raise
            ctx_g = g._get_current_object()
            ctx_g.api_key, ctx_g.key_id = key, (key.id if key is not None else None)
            return view(*args, **kwargs)

        wrapper.required_scopes = scopes  # type: ignore[attr-defined]  # read by the OpenAPI document
        return wrapper

    return decorator


def actor() -> str:
    """Who the audit trail names for this request's change: its key, or the open loopback caller."""
    return f"key:{g.key_id}" if g.get("key_id") else "open-loopback"


def _authorize(policy: Policy, scopes: tuple[str, ...], extensions: dict) -> ApiKey | None:
    req = request._get_current_object()
    trusted = extensions.get("trusted_proxies")
    if trusted is None:  # an empty list is falsy, but it is the app's own: no new one per request
        trusted = NO_PROXIES
    if policy.is_open(scopes, is_local(req.environ, trusted)):
        return None
    token = credentials_from_headers(req.headers)
    if not token and policy.open_scopes:
        raise _why_a_key_is_needed(policy, scopes)
    return policy.store.authorize(token, *scopes)


def _audit_denied(exc: ServiceError, scopes: tuple[str, ...]) -> None:
    """Queue a 401/403 for the audit trail; never let that fail or slow the answer."""
    try:
        background = current_app.extensions.get("audit")
        if background is None:
            return
        actor = "anonymous"
        if exc.status == 403:  # the key was valid: name it (its id, never the key)
            key = current_app.extensions["security"].store.authenticate(credentials_from_headers(request.headers) or "")
            actor = f"key:{key.id}" if key is not None else actor
        details = {"status": exc.status, "method": request.method, "scopes": list(scopes),
                   "reason": (exc.details or {}).get("reason"), "remote_addr": request.remote_addr}
        background.put(actor, "auth.denied", request.path[:300], details)
    except Exception:
        log.warning("authentication failure not queued for the audit trail", exc_info=True)


def _why_a_key_is_needed(policy: Policy, scopes: tuple[str, ...]) -> Unauthorized:
    """Explain, in open mode, why this request still needs a key and which key: one with the scope the
    call needs (``keys create`` writes it where the server reads), the local admin key for admin calls."""
    open_scopes = [scope for scope in scopes if scope in policy.open_scopes]
    if not open_scopes:
        return Unauthorized(
            "Admin calls need an API key with the admin scope, even on loopback: send the local admin key (printed "
            "once by `make serve`, which runs `python -m service keys ensure-local-admin`) as "
            "'Authorization: Bearer <key>'.",
            details={"reason": "admin_needs_key"},
        )
    scope = open_scopes[0]
    why = why_not_local(request.environ, trusted_proxies())
    return Unauthorized(
        f"This request {why}, so it needs an API key with the {scope!r} scope (without API_KEYS_FILE only direct "
        f"loopback calls are open): make one with `python -m service keys create --name app --scopes {scope}` "
        "and send it as 'Authorization: Bearer <key>'.",
        details={"reason": "not_local", "required_scope": scope},
    )

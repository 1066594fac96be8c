"""The HTTP side of API keys: ``init_app`` loads the key store, ``require_scope`` guards a view."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import Flask, current_app, g, request

from service.config import Config
from service.security.keys import SCOPES, KeyStore, credentials_from_headers, load_key_store

P = ParamSpec("P")
R = TypeVar("R")


def init_app(app: Flask, config: Config) -> None:
    """Apply the startup policy and keep the store on ``app.extensions["security"]``."""
    app.extensions["security"] = load_key_store(config)


def require_scope(scope: str, *others: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a view so it runs only for a key with ``scope`` (or one of ``others``); sets ``g.key_id``."""
    for name in (scope, *others):
        if name not in SCOPES:
            raise ValueError(f"unknown scope {name!r}: choose from {', '.join(SCOPES)}")

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if "security" not in current_app.extensions:
                # Fail closed: a forgotten init_app must not turn into an open server.
                raise RuntimeError("service.api.auth.init_app(app, config) was not called")
            store: KeyStore | None = current_app.extensions["security"]
            if store is None:
                g.key_id = None
            else:
                g.key_id = store.authorize(credentials_from_headers(request.headers), scope, *others).id
            return view(*args, **kwargs)

        return wrapper

    return decorator

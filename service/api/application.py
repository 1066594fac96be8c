"""The Flask class the service runs on: Flask, with each hook's sync check made once, not per request,
and each URL a worker sees matched to its rule once.

Flask asks of every before/after/teardown function and of the view, on every request, whether
it is a coroutine function (``ensure_sync``, a few ``inspect`` calls each). Ours never change
once registered, so the answer is kept per function; a coroutine function still goes to
Flask's own ``async_to_sync`` every time, as it would without this class.

Werkzeug's router walks its state machine and runs the converters for every request, though a
worker sees few distinct paths (a model's predict URL, again and again). ``MatchCache`` keeps
the rule and arguments of the last ``MATCHES_KEPT`` paths that matched; what does not match
(404, 405, a redirect) is worked out every time, and adding a rule forgets every kept match.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask

MAX_CHECKED = 1024  # functions whose answer is kept; past it (a bug elsewhere) Flask is asked each time
MATCHES_KEPT = 256  # (host, path, method) matches kept per worker, least recently used dropped first


class MatchCache:
    """Werkzeug's matcher (``Map._matcher``), remembering the rule and arguments each path matched."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher
        self._kept = functools.lru_cache(maxsize=MATCHES_KEPT)(self._match)

    def _match(self, domain: str, path: str, method: str | None, websocket: bool) -> tuple[Any, tuple]:
        rule, values = self.matcher.match(domain, path, method, websocket)  # raises for no match: never kept
        return rule, tuple(values.items())

    def match(self, domain: str, path: str, method: str | None, websocket: bool) -> tuple[Any, dict[str, Any]]:
        rule, values = self._kept(domain, path, method, websocket)
        return rule, dict(values)  # a dict of its own for each request: view args may be changed by a hook

    def add(self, rule: Any) -> None:
        self._kept.cache_clear()
        self.matcher.add(rule)

    def update(self) -> None:
        self._kept.cache_clear()
        self.matcher.update()

    @property
    def merge_slashes(self) -> bool:
        return self.matcher.merge_slashes

    @merge_slashes.setter
    def merge_slashes(self, value: bool) -> None:
        self._kept.cache_clear()
        self.matcher.merge_slashes = value


class ServiceFlask(Flask):
    """``Flask`` whose ``ensure_sync`` remembers which functions are already synchronous, and whose
    URL map remembers what each path matched (``MatchCache``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: set[Callable[..., Any]] = set()
        self.url_map._matcher = MatchCache(self.url_map._matcher)  # noqa: SLF001  (Werkzeug's matcher, wrapped)

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if func in self._synchronous:
            return func
        synced = super().ensure_sync(func)
        if synced is func and len(self._synchronous) < MAX_CHECKED:
            self._synchronous.add(func)
        return synced

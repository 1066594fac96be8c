"""The Flask class the service runs on: Flask, with each hook's sync check made once, not per request.

Flask asks of every before/after/teardown function and of the view, on every request, whether
it is a coroutine function (``ensure_sync``, a few ``inspect`` calls each). Ours never change
once registered, so the answer is kept per function; a coroutine function still goes to
Flask's own ``async_to_sync`` every time, as it would without this class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

MAX_CHECKED = 1024  # functions whose answer is kept; past it (a bug elsewhere) Flask is asked each time


class ServiceFlask(Flask):
    """``Flask`` whose ``ensure_sync`` remembers which functions are already synchronous."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: set[Callable[..., Any]] = set()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if func in self._synchronous:
            return func
        synced = super().ensure_sync(func)
        if synced is func and len(self._synchronous) < MAX_CHECKED:
            self._synchronous.add(func)
        return synced

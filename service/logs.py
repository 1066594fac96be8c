"""Structured logs: one JSON object per line on stderr, tagged with the request id.

Log lines are for operators and may carry tracebacks; HTTP responses never do (that is the
error handlers' job). The request id lives in a context variable so that the formatter, and
any code deep below a view, can read it without Flask.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

import orjson

REQUEST_ID_HEADER = "X-Request-ID"
#: What we accept from a client as a request id; anything else is replaced, never echoed.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; whatever else is on a record came from ``extra={...}``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_CORE_FIELDS = ("ts", "level", "logger", "message", "request_id", "exc_type", "exc", "stack")


def current_request_id() -> str | None:
    """Return the id of the request being handled, or ``None`` outside a request."""
    return request_id_var.get()


class JsonFormatter(logging.Formatter):
    """Render a record as one line of JSON with the fields log pipelines index on."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            doc["request_id"] = request_id
        for name, value in record.__dict__.items():
            # Caller fields never overwrite ours: a stray extra={"level": ...} must not lie.
            if name not in _RECORD_ATTRS and name not in _CORE_FIELDS and not name.startswith("_"):
                doc[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            doc["exc_type"] = record.exc_info[0].__name__
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return _dumps(doc)


def _dumps(doc: dict[str, Any]) -> str:
    try:
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson refuses a few values outright (ints beyond 64 bits); a log line must still come out.
        return json.dumps(doc, default=str)


class _JsonHandler(logging.StreamHandler):
    """Marks the handler we installed, so configuring again replaces it instead of adding one."""


def configure_logging(level: str, stream: IO[str] | None = None) -> None:
    """Send every log record to stderr as JSON at ``level``; safe to call more than once.

    Call it before the Flask app first touches ``app.logger``, so Flask sees a handler on the
    root logger and does not add its own plain-text one.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(handler)
    handler = _JsonHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(numeric)


class IdSource:
    """Make request ids of 32 hex digits: 16 drawn at random once per process (again in every forked
    child), then a 64-bit counter started at a random value. As unique as 128 random bits in
    practice (two processes clash only when their 64 random bits do), at no system call per
    request: reading the kernel's random source cost a few microseconds a request in a worker."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)  # a forked worker never repeats its parent's ids

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        # from below 2**63: 2**63 ids at least before the counter needs a seventeenth digit
        self.counter = itertools.count(int.from_bytes(os.urandom(8), "big") >> 1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"  # next() on a count is atomic under the GIL


#: A fresh request id (``IdSource``).
new_request_id = IdSource()


def sane_request_id(value: str | None) -> str:
    """Return ``value`` when it is safe to reuse as a request id, else a fresh one."""
    if value and REQUEST_ID_RE.fullmatch(value):
        return value
    return new_request_id()

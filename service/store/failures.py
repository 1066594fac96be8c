"""Why a write to the store failed, in the few words operators alert on.

Both backends reach callers as ``sqlite3.Error`` (the PostgreSQL dialect converts), so the
reason is read from the message: SQLite's own texts and PostgreSQL's (psycopg) ones.
"""

from __future__ import annotations

#: Every reason a failed write is counted under (a Prometheus label: keep the set small and fixed).
REASONS = ("locked", "full", "read_only", "unreachable", "other")

_MARKERS = (
    ("locked", ("database is locked", "database table is locked", "lock timeout", "could not obtain lock",
                "deadlock detected", "canceling statement due to lock timeout",
                "statement timeout")),  # PostgreSQL's statement_timeout bounds our waits for a lock
    ("full", ("database or disk is full", "no space left", "could not extend file", "disk quota exceeded",
              "disk full")),
    ("read_only", ("readonly database", "read-only", "read only", "permission denied", "access permission")),
    ("unreachable", ("unable to open database", "connection refused", "could not connect", "server closed",
                     "connection is closed", "terminating connection", "the database system is",
                     "no such host", "timeout expired", "connection timed out", "disk i/o error",
                     "connection failed", "consuming input failed", "the connection is lost",
                     "no answer from the database server")),
)


def reason_for(exc: BaseException) -> str:
    """Return the reason a write failed: one of ``REASONS``."""
    text = f"{type(exc).__name__}: {exc}".lower()
    for reason, markers in _MARKERS:
        if any(marker in text for marker in markers):
            return reason
    return "other"

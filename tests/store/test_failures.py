"""A failed write is counted under the reason operators act on, from either backend's message."""

from __future__ import annotations

import sqlite3

import pytest

from service.store.failures import REASONS, reason_for


@pytest.mark.parametrize(("message", "reason"), [
    ("database is locked", "locked"),
    ("canceling statement due to statement timeout", "locked"),
    ("database or disk is full", "full"),
    ("could not extend file \"base/16384/2619\": No space left on device", "full"),
    ("attempt to write a readonly database", "read_only"),
    ("cannot execute INSERT in a read-only transaction", "read_only"),
    ("unable to open database file", "unreachable"),
    ("connection failed: connection refused", "unreachable"),
    ("no answer from the database server within 5 s", "unreachable"),
    ("disk I/O error", "unreachable"),
    ("NOT NULL constraint failed: requests.ts", "other"),
])
def test_each_message_has_its_reason(message, reason):
    assert reason_for(sqlite3.OperationalError(message)) == reason
    assert reason in REASONS

"""A SQLite connection a test opens on a store's file, closed when the block ends.

``with sqlite3.connect(path) as db`` commits but does not close; CPython 3.13 warns
(ResourceWarning: unclosed database) when such a connection is garbage-collected.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def connected(path: Path | str, **kwargs: Any) -> Iterator[sqlite3.Connection]:
    """``sqlite3.connect(path, **kwargs)``, committed on success (rolled back on error) and closed."""
    db = sqlite3.connect(path, **kwargs)
    try:
        with db:
            yield db
    finally:
        db.close()


def query(path: Path | str, sql: str, *params: Any) -> list[tuple]:
    """Every row ``sql`` returns, read on a connection of its own."""
    with connected(path) as db:
        return db.execute(sql, params).fetchall()

"""The shared store on SQLite and on PostgreSQL: schema, failure accounting, retention."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from service.store import RequestRecord, ShadowRecord, Store


def request(ts: float, model: str = "m", version: int = 1) -> RequestRecord:
    return RequestRecord(request_id=f"r{ts}", ts=ts, model=model, version=version, role="production",
                         status=200, latency_ms=1.5, rows=1)


def shadow(ts: float, model: str = "m") -> ShadowRecord:
    return ShadowRecord(ts=ts, model=model, live_version=1, shadow_version=2, rows=1, agreement=1.0, mean_abs_diff=0.0)


def test_requests_and_shadow_round_trip(make_store):
    store = make_store()
    assert store.record_requests([request(10), request(20), request(30, model="other")])
    assert store.record_shadow([shadow(15)])
    assert store.record_requests([])
    assert [r["ts"] for r in store.requests_since("m", 15)] == [20]
    assert [r["ts"] for r in store.shadow_since("m", 0)] == [15]
    assert store.fetch("SELECT count(*) FROM requests") == [(3,)]
    (row,) = store.requests_since("other", 0)
    assert (row[row.keys().index("model")], row["version"], dict(row)["latency_ms"]) == ("other", 1, 1.5)
    if make_store.backend == "sqlite":
        names = {r[0] for r in store.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert store.fetch("PRAGMA journal_mode") == [("wal",)]
    else:
        names = {r[0] for r in store.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"requests", "shadow", "prediction_batches", "feedback"} <= names and "predictions" not in names


def test_reopening_keeps_tables_and_rows_and_foreign_tables(make_store):
    make_store().record_requests([request(1)])
    other = make_store()
    other.create_tables("CREATE TABLE alerts (name TEXT, ts DOUBLE PRECISION)")  # another module's table (alerts)
    with other.transaction() as db:
        db.execute("INSERT INTO alerts VALUES ('a', 1)")
    store = make_store()
    assert len(store.requests_since("m", 0)) == 1
    assert store.purge(0, now=100) == {"predictions": 0, "feedback": 0, "prediction_batches": 0, "requests": 1, "shadow": 0}
    assert store.fetch("SELECT count(*) FROM alerts") == [(1,)]


def test_transaction_rolls_back_and_raises(make_store):
    store = make_store()
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        db.execute("INSERT INTO requests (request_id, ts, model, role, status, latency_ms, rows)"
                   " VALUES ('a', 1, 'm', 'p', 200, 1, 1)")
        db.execute("INSERT INTO requests (request_id) VALUES ('b')")  # NOT NULL fails
    assert store.fetch("SELECT count(*) FROM requests") == [(0,)]


def test_locked_database_is_counted_and_logged_once_per_burst(tmp_path, caplog):
    path = tmp_path / "db.sqlite"
    store = Store(path, timeout=0.05)
    holder = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.WARNING, logger="service.store"):
        assert store.record_requests([request(1)]) is False
        assert store.record_shadow([shadow(1)]) is False
        holder.execute("ROLLBACK")
        assert store.record_requests([request(2)]) is True
    holder.close()
    assert store.write_failures == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].reason == "locked" and "locked" in errors[0].error
    assert [r.failed_in_burst for r in caplog.records if r.levelno == logging.WARNING] == [2]


def test_purge_deletes_old_rows_of_every_model_in_batches(make_store):
    store = make_store()
    store.record_requests([request(ts, model=m) for ts in range(100) for m in ("a", "b")])
    store.record_shadow([shadow(ts, model=m) for ts in range(100) for m in ("a", "b")])
    counts = store.purge(older_than_seconds=50, now=100, batch=7)  # cut-off 50: ts 0..49 go
    assert counts == {"predictions": 0, "feedback": 0, "prediction_batches": 0, "requests": 100, "shadow": 100}
    assert store.fetch("SELECT min(ts), count(*) FROM requests") == [(50.0, 100)]
    assert store.fetch("SELECT min(ts), count(*) FROM shadow") == [(50.0, 100)]
    assert store.purge(older_than_seconds=50, now=100)["requests"] == 0


def test_from_url(tmp_path, postgres_server):
    store = Store.from_url(f"sqlite:///{tmp_path}/x/db.sqlite")
    assert store.path == tmp_path / "x" / "db.sqlite" and store.path.exists()
    for scheme in ("postgresql://", "postgres://"):
        url = postgres_server.create_database().replace("postgresql://", scheme)
        server = Store.from_url(url, timeout=1.0)
        assert server.path is None and server.lock_path("alerts") is None and server.record_requests([request(1)])
        server.close()
    with pytest.raises(ValueError, match="sqlite:///, postgresql:// or postgres://"):
        Store.from_url("mysql://x")


def test_locked_postgres_table_is_counted_within_the_timeout(postgres_server, caplog):
    """PostgreSQL's counterpart of a locked file: a writer waits at most the store's timeout."""
    url = postgres_server.create_database()
    store, holder = Store.from_url(url, timeout=0.2), Store.from_url(url)
    with holder.transaction() as db, caplog.at_level(logging.ERROR, logger="service.store"):
        db.execute("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        assert store.record_requests([request(1)]) is False
        assert time.monotonic() - started < 2
    assert store.write_failures == 1 and caplog.records[0].reason == "locked"
    assert "statement timeout" in caplog.records[0].error
    assert store.record_requests([request(2)]) is True
    store.close()
    holder.close()


def test_a_lock_wait_that_times_out_leaves_the_thread_a_usable_connection(postgres_server):
    """The transaction prelude (BEGIN, timeout, advisory lock) failing must roll back, never leave the
    cached connection inside a failed transaction for the next read or write on the thread."""
    import psycopg

    from service.store.postgres import lock_key

    url = postgres_server.create_database()
    store = Store.from_url(url, timeout=0.2)
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("busy"),))  # what a transaction on "busy" waits for
        with pytest.raises(sqlite3.OperationalError, match="statement timeout"), store.transaction(lock="busy"):
            pass
    assert store.record_requests([request(1)]) is True
    assert [r["ts"] for r in store.query("SELECT ts FROM requests")] == [1.0]
    assert store.write_failures == 0
    store.close()


def test_an_unwritable_sqlite_directory_at_start_is_logged_and_retried(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the database's directory should be")
    with caplog.at_level(logging.WARNING, logger="service.store"):
        store = Store(blocker / "db.sqlite", timeout=0.1)  # must not raise: a server boots during the outage
        assert store.record_requests([request(1)]) is False  # counted, not raised
        with pytest.raises(sqlite3.OperationalError):  # reads raise, as ever
            store.requests_since("m", 0)
        blocker.unlink()  # the directory can be made now
        assert store.record_requests([request(2)]) is True
    assert [r["ts"] for r in store.requests_since("m", 0)] == [2.0]
    assert store.write_failures == 1
    schema = [r for r in caplog.records if "schema" in r.getMessage()]
    assert [r.levelno for r in schema] == [logging.ERROR, logging.WARNING]  # failed once (logged once), then back
    store.close()

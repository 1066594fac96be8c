"""The audit trail: an append-only, hash-chained log of security-relevant actions in the store.

Each record holds who, when, what, on what, and details (JSON), plus the hash of the record
before it; its own hash covers that and its content, so editing, deleting or reordering any
record breaks the chain at that point (``verify`` names it). Records are written one at a
time under the store's ``audit`` transaction lock. Removing records from the end leaves a
valid shorter chain: keep exports (or the head hash) elsewhere to detect that. This module
writes and checks records; it decides nothing about what is worth recording. No Flask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

log = logging.getLogger(__name__)

GENESIS = "0" * 64
LOCK = "audit"
COLUMNS = ("seq", "ts", "actor", "action", "target", "details", "prev_hash", "hash")
PAGE = 1000
BATCH = 200  # records the background writer puts in one transaction
RECORDS_PAGE = f"SELECT {', '.join(COLUMNS)} FROM audit WHERE seq > ? ORDER BY seq LIMIT {PAGE}"  # noqa: S608  # nosec B608  # constants and "?" only


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: float
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


def content_hash(prev_hash: str, seq: int, ts: float, actor: str, action: str, target: str,
                 details: dict[str, Any]) -> str:
    """The sha256 of the previous hash and this record's canonical content (sorted keys, no spaces)."""
    body = json.dumps({"seq": seq, "ts": ts, "actor": actor, "action": action, "target": target,
                       "details": details}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def record(store: Any, actor: str, action: str, target: str, details: dict[str, Any] | None = None, *,
           now: float | None = None) -> AuditRecord:
    """Append one record and return it; raise ``sqlite3.Error`` when the store cannot take it."""
    return record_many(store, [(actor, action, target, details or {})], now=now)[0]


def record_many(store: Any, items: list[tuple[str, str, str, dict[str, Any]]], *,
                now: float | None = None) -> list[AuditRecord]:
    """Append (actor, action, target, details) records in one transaction, in order; return them."""
    with store.transaction(lock=LOCK) as db:
        return _append(store, db, items, now)


def record_unless(store: Any, skip: Callable[[Any], bool], item: tuple[str, str, str, dict[str, Any]]
                  ) -> AuditRecord | None:
    """Append one record unless ``skip(db)`` says so, deciding under the audit lock; return it or None.

    For a record that many processes may want to write at once and one should (an anchor, a refusal).
    """
    with store.transaction(lock=LOCK) as db:
        if skip(db):
            return None
        return _append(store, db, [item], None)[0]


def _append(store: Any, db: Any, items: list[tuple[str, str, str, dict[str, Any]]],
            now: float | None) -> list[AuditRecord]:
    ts = round(time.time() if now is None else now, 6)
    written = []
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (int(last[0]), last[1]) if last else (0, GENESIS)
    rows = []
    for actor, action, target, details in items:
        details = json.loads(json.dumps(details, default=str))  # what is hashed is exactly what reads back
        seq += 1
        digest = content_hash(prev, seq, ts, actor, action, target, details)
        rows.append((seq, ts, actor, action, target, json.dumps(details, sort_keys=True), prev, digest))
        written.append(AuditRecord(seq, ts, actor, action, target, details, prev, digest))
        prev = digest
    db.executemany(store.insert_sql("audit", COLUMNS), rows)
    return written


def record_quietly(store: Any, actor: str, action: str, target: str,
                   details: dict[str, Any] | None = None) -> AuditRecord | None:
    """Append a record, or log why it could not be: for paths that must never fail because of the audit."""
    try:
        return record(store, actor, action, target, details)
    except Exception as exc:  # full disk, database down, lock timeout: the caller goes on
        log.error("audit record could not be written", extra={"action": action, "target": target,
                                                               "reason": f"{type(exc).__name__}: {exc}"})
        return None


def records(store: Any, after: int = 0) -> Iterator[dict[str, Any]]:
    """Yield every record as stored (``details`` as its JSON text) after seq ``after``, oldest first, a page at a time."""
    after = after if after > 0 else -1
    while True:
        rows = store.fetch(RECORDS_PAGE, (after,))
        for row in rows:
            yield dict(zip(COLUMNS, row, strict=True))
        if len(rows) < PAGE:
            return
        after = rows[-1][0]


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of ``verify``: how many records were read and the first broken one, if any."""

    count: int
    broken_seq: int | None = None
    reason: str | None = None
    head: str = GENESIS

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def verify(store: Any, *, since: int = 0, prev: str = GENESIS,
           seen: Callable[[int, str], None] | None = None) -> ChainCheck:
    """Walk the chain from the first record (or from the one after ``since``, whose hash is ``prev``);
    stop at the first record whose position or hash is wrong. ``seen(seq, hash)`` hears each good one."""
    expected_seq, count = since + 1, since
    for row in records(store, since):
        seq = int(row["seq"])
        problem = _problem(row, prev, expected_seq)
        if problem:
            return ChainCheck(count, seq, problem, prev)
        prev, expected_seq, count = row["hash"], seq + 1, count + 1
        if seen is not None:
            seen(seq, prev)
    return ChainCheck(count, head=prev)


def _problem(row: dict[str, Any], prev: str, expected_seq: int) -> str | None:
    seq = int(row["seq"])
    if seq != expected_seq:
        return f"record {expected_seq} is missing (next is {seq})" if seq > expected_seq else "sequence out of order"
    if row["prev_hash"] != prev:
        return "prev_hash does not match the record before it (a record was deleted, inserted or moved)"
    try:
        details = json.loads(row["details"])
    except (TypeError, ValueError):
        return "details are not valid JSON"
    digest = content_hash(row["prev_hash"], seq, float(row["ts"]), row["actor"], row["action"], row["target"], details)
    if digest != row["hash"]:
        return "content does not match its hash (the record was edited)"
    return None


def export(store: Any, out: TextIO) -> int:
    """Write every record as one JSON object per line (details as an object); return the count."""
    count = 0
    for row in records(store):
        row["details"] = json.loads(row["details"]) if _is_json(row["details"]) else row["details"]
        out.write(json.dumps(row, sort_keys=True, ensure_ascii=True) + "\n")
        count += 1
    return count


def find(store: Any, action_prefix: str) -> list[AuditRecord]:
    """Return the records whose action starts with ``action_prefix``, oldest first."""
    found = []
    for row in records(store):
        if row["action"].startswith(action_prefix) and _is_json(row["details"]):
            found.append(AuditRecord(**{**row, "seq": int(row["seq"]), "details": json.loads(row["details"])}))
    return found


def _is_json(text: Any) -> bool:
    try:
        json.loads(text)
    except (TypeError, ValueError):
        return False
    return True



class Background:
    """Records written off the request path by one daemon thread per process, from a bounded queue.

    For events an outsider can cause at will (authentication failures) or that happen while the
    store is not there yet (artifacts refused at boot): ``put`` never blocks and never raises;
    past ``capacity`` records are dropped and counted in ``dropped``.
    """

    def __init__(self, store: Any = None, capacity: int = 1000):
        self.store = store
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, str, str, dict[str, Any]]] = queue.Queue(capacity)
        self._pid: int | None = None
        self._start_lock = threading.Lock()

    def attach(self, store: Any) -> None:
        """Give the store, and start writing what waited for it."""
        self.store = store
        self._start()

    def put(self, actor: str, action: str, target: str, details: dict[str, Any] | None = None) -> None:
        try:
            self._queue.put_nowait((actor, action, target, details or {}))
        except queue.Full:
            self.dropped += 1
            return
        if self.store is not None:
            self._start()

    def refused(self, then: Callable[[str, int], None]) -> Callable[[str, int], None]:
        """A catalog ``on_load_failed`` listener: call ``then`` and record the refused artifact."""

        def listener(name: str, version: int) -> None:
            then(name, version)
            self.put(f"server:{socket.gethostname()}:{os.getpid()}", "artifact.refused", f"{REGISTRY_TARGET}{name}",
                     {"version": version})

        return listener

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is written (tests, a graceful exit); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # after a fork the parent's thread is gone: start this process's own
            threading.Thread(target=self._run, name="audit-writer", daemon=True).start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:  # one transaction for what has piled up: a flood costs less per record
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                record_many(self.store, batch)
            except Exception as exc:  # the store is down or full: these records are lost, and said so
                log.error("audit records could not be written", extra={"records": len(batch),
                                                                        "reason": f"{type(exc).__name__}: {exc}"})
            finally:
                for _ in batch:
                    self._queue.task_done()


# -- registry changes -----------------------------------------------------------------------------

REGISTRY_TARGET = "model:"

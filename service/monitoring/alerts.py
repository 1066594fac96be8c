"""Alert state: turn rule evaluations into ok / pending / warn / firing, shared and notified once.

The rules themselves (loading the TOML, evaluating a report) are ``alert_rules``; here
``AlertManager`` keeps each rule's state in the shared store (SQLite or PostgreSQL) so every
worker and replica agrees, and notifies on transitions exactly once.
``AlertLoop`` runs the evaluation periodically off the request path, in one worker at a time.
Nothing here runs on a request, and nothing imports Flask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.monitoring.alert_rules import (  # noqa: F401  (part of this module's surface)
    DEFAULT_RULES_FILE,
    Evaluation,
    Rule,
    evaluate,
    evaluate_rule,
    load_rules,
    lookup,
    parse_rule,
)
from service.monitoring.notify import Notification, Notifier
from service.periodic import Periodic
from service.store import Store
from service.store.election import Leadership

log = logging.getLogger(__name__)

#: Gauge value of each state, for ``on_state`` (Prometheus wants numbers).
STATE_VALUES = {"insufficient": -1, "ok": 0, "pending": 1, "warn": 2, "firing": 3}
ACTIVE_STATES = ("pending", "warn", "firing")

#: ``{any}``: no type on SQLite (numbers and strings kept as given), JSON text on PostgreSQL.
SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,                  -- ok | pending | warn | firing | insufficient
    since DOUBLE PRECISION NOT NULL,      -- unix seconds the state was entered
    value {any},                          -- last value seen: number, status string, or NULL
    threshold {any},                      -- the threshold crossed (or the nearest one when ok)
    updated_at DOUBLE PRECISION NOT NULL, -- last evaluation
    last_notified_at DOUBLE PRECISION,    -- last notification sent for this alert
    pending_since DOUBLE PRECISION,       -- when a level not yet held for for_seconds began
    PRIMARY KEY (model, version, rule)
);
"""
ALERT_COLUMNS = ("model", "version", "rule", "state", "since", "value", "threshold", "updated_at", "last_notified_at",
                 "pending_since")
#: The store lock that makes read-decide-write of alert states one process at a time.
LOCK = "alerts"


@dataclass(frozen=True)
class Transition:
    """A state change; ``notification`` is firing | warn | resolved when somebody was told."""

    model: str
    version: int
    rule: str
    previous: str
    state: str
    since: float
    value: float | str | None
    threshold: float | str | None
    notification: str | None


# --- state machine (pure) ------------------------------------------------------------------

def step(previous: str, since: float, pending_since: float | None, level: str, now: float,
         for_seconds: float) -> tuple[str, float, float | None]:
    """Return the next (state, since, pending_since) of one alert given its latest ``level``.

    A warn or alert level must hold ``for_seconds`` before the state says so: from ok the
    state is ``pending`` meanwhile; from warn, escalating to firing, it stays ``warn``.
    Getting better (firing to warn, anything to ok) takes effect at once.
    """
    if level in ("ok", "insufficient"):
        state, pending = level, None
    else:
        target = "firing" if level == "alert" else "warn"
        if previous == target or (previous == "firing" and target == "warn"):
            state, pending = target, None
        else:
            start = pending_since if pending_since is not None else now
            if now - start >= for_seconds:
                state, pending = target, None
            else:
                state, pending = ("warn" if previous == "warn" else "pending"), start
    return state, (since if state == previous else now), pending


def notification_for(previous: str, state: str) -> str | None:
    """Return what to tell people about a change from ``previous`` to ``state``, if anything."""
    if state == previous:
        return None
    if state in ("warn", "firing"):
        return state
    if previous in ("warn", "firing"):
        return "resolved"  # to ok, or to insufficient: nobody should stay paged on no data
    return None


# --- shared state --------------------------------------------------------------------------

class AlertManager:
    """Keep every (model, version, rule) alert's state in the shared store; notify each change once."""

    def __init__(self, store: Store | Path | str, rules: Iterable[Rule], notifier: Notifier | None = None,
                 on_state: Callable[[str, int, str, int], None] | None = None, timeout: float = 10.0,
                 on_action: Callable[[Rule, Transition], None] | None = None):
        self.store = store if isinstance(store, Store) else Store(store)  # a path: a SQLite file
        self.rules = {rule.name: rule for rule in rules}
        self.notifier = notifier if notifier is not None else Notifier()
        #: Called as ``on_state(model, version, rule, STATE_VALUES[state])``, e.g. to set a gauge.
        self.on_state = on_state
        self.timeout = timeout  # seconds an evaluation may wait for the store's write lock
        #: Called once as ``on_action(rule, transition)`` when a rule with an ``action`` starts firing.
        self.on_action = on_action
        self._upsert = self.store.insert_sql("alerts", ALERT_COLUMNS, conflict="replace", key=ALERT_COLUMNS[:3])
        self.store.ensure_tables(SCHEMA)  # never raises: a database down now gets the table on first use

    def apply(self, model: str, version: int | str, evaluations: Iterable[Evaluation], now: float) -> list[Transition]:
        """Move each alert of one model version to its next state and notify; return the changes.

        The read-decide-write happens in one transaction under the store's ``alerts`` lock, so of
        several processes applying the same evaluations exactly one sees (and announces) each
        change. Notifications go out after the commit. Raises ``sqlite3.Error`` when the store fails.
        """
        version = int(version)
        evaluations = list(evaluations)
        transitions: list[Transition] = []
        states: dict[str, str] = {}
        pack = self.store.pack
        with self.store.transaction(LOCK, self.timeout) as db:
            rows = {row["rule"]: row for row in db.execute(
                "SELECT * FROM alerts WHERE model = ? AND version = ?", (model, version))}
            for ev in evaluations:
                rule = self.rules.get(ev.rule)
                row = rows.get(ev.rule)
                previous = row["state"] if row else "ok"
                state, since, pending = step(previous, row["since"] if row else now, row["pending_since"] if row else None,
                                             ev.level, now, rule.for_seconds if rule else 0.0)
                states[ev.rule] = state
                notification = notification_for(previous, state)
                notified = now if notification else (row["last_notified_at"] if row else None)
                db.execute(self._upsert, (model, version, ev.rule, state, since, pack(ev.value), pack(ev.threshold), now,
                                          notified, pending))
                if state != previous:
                    transitions.append(Transition(model, version, ev.rule, previous, state, since, ev.value,
                                                  ev.threshold, notification))
        self._announce(transitions)
        for rule_name, state in states.items():
            self._publish(model, version, rule_name, state)
        return transitions

    def retire(self, keep: Iterable[tuple[str, int | str]], now: float) -> list[Transition]:
        """Forget the alerts of model versions not in ``keep`` (no longer served); resolve the loud ones."""
        keep = {(model, int(version)) for model, version in keep}
        transitions: list[Transition] = []
        unpack = self.store.unpack
        with self.store.transaction(LOCK, self.timeout) as db:
            for row in db.execute("SELECT * FROM alerts").fetchall():
                if (row["model"], row["version"]) in keep:
                    continue
                db.execute("DELETE FROM alerts WHERE model = ? AND version = ? AND rule = ?",
                           (row["model"], row["version"], row["rule"]))
                transitions.append(Transition(row["model"], row["version"], row["rule"], row["state"], "ok", now,
                                              unpack(row["value"]), unpack(row["threshold"]),
                                              notification_for(row["state"], "ok")))
        self._announce(transitions)
        for t in transitions:
            self._publish(t.model, t.version, t.rule, "ok")
        return transitions

    def states(self, model: str | None = None, only: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Return the stored alerts (of ``model``; in states ``only``) as JSON-ready dicts, loudest first."""
        rows = self.store.query("SELECT * FROM alerts" + (" WHERE model = ?" if model is not None else ""),  # nosec B608  # noqa: S608  constants; model is a parameter
                                (model,) if model is not None else ())
        wanted = set(only) if only is not None else None
        unpack = self.store.unpack
        # metric and op come from the rule (not the row), so the page can say what was measured
        docs = [{"model": r["model"], "version": r["version"], "rule": r["rule"],
                 "description": self.rules[r["rule"]].description, "metric": self.rules[r["rule"]].metric,
                 "op": self.rules[r["rule"]].op, "state": r["state"], "since": r["since"],
                 "value": unpack(r["value"]), "threshold": unpack(r["threshold"]), "updated_at": r["updated_at"],
                 "last_notified_at": r["last_notified_at"]}
                for r in rows if r["rule"] in self.rules and (wanted is None or r["state"] in wanted)]
        return sorted(docs, key=lambda d: (-STATE_VALUES[d["state"]], d["model"], d["version"], d["rule"]))

    def active(self, model: str | None = None) -> list[dict[str, Any]]:
        """Return the alerts that are pending, warn or firing (for the API and the page)."""
        return self.states(model, ACTIVE_STATES)

    def publish(self) -> None:
        """Hand every stored state to ``on_state`` (e.g. from a worker that does not evaluate)."""
        for doc in self.states():
            self._publish(doc["model"], doc["version"], doc["rule"], doc["state"])

    def _announce(self, transitions: list[Transition]) -> None:
        for t in transitions:
            if t.notification is None:
                continue
            rule = self.rules.get(t.rule)
            try:
                self.notifier.send(Notification(t.notification, t.model, t.version, t.rule,
                                                rule.description if rule else t.rule, t.value, t.threshold, t.since))
            except Exception:  # a broken notifier must not stop the others or the loop
                log.exception("alert notification failed", extra={"rule": t.rule})
            if t.notification == "firing" and rule is not None and rule.action and self.on_action is not None:
                try:
                    self.on_action(rule, t)
                except Exception:  # the action is extra work: it must not stop the loop either
                    log.exception("alert action failed", extra={"rule": t.rule, "action": rule.action})

    def _publish(self, model: str, version: int, rule: str, state: str) -> None:
        if self.on_state is None:
            return
        try:
            self.on_state(model, version, rule, STATE_VALUES[state])
        except Exception:
            log.exception("alert state callback failed", extra={"rule": rule})


# --- the periodic loop ---------------------------------------------------------------------

class AlertLoop:
    """Evaluate every report each ``interval`` seconds on a daemon thread, in one process at a time.

    The processes sharing a database elect an evaluator with a lock taken without waiting: a
    ``flock`` on a file next to a SQLite database, a session advisory lock on PostgreSQL (so
    one evaluator for all replicas). The first to take it keeps it (and evaluates) until it
    stops or dies, when the lock is released and the next one to try takes over. Start the
    loop after forking (in each worker), never in a preloading master.
    """

    def __init__(self, manager: AlertManager, build_reports: Callable[[], Iterable[tuple[str, int | str, dict[str, Any]]]],
                 interval: float = 30.0, lock_path: Path | str | None = None, clock: Callable[[], float] = time.time,
                 retire_missing: bool = True):
        self.manager = manager
        self.build_reports = build_reports
        self.interval = interval
        self._leader = Leadership(manager.store, LOCK, lock_path)
        self.lock_path = self._leader.lock_path  # None: a database lock
        self.clock = clock
        self.retire_missing = retire_missing
        #: Rounds evaluated by this process, and failures (a builder or a version that raised).
        self.runs = self.failures = 0
        self._loop = Periodic("alert-loop", interval, self.run_once)

    def start(self) -> None:
        """Start the daemon thread (idempotent)."""
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and give up the evaluator's lock."""
        self._loop.stop(timeout)
        self._leader.release()

    def run_once(self) -> bool:
        """Evaluate every report now if this process is the evaluator; return whether it was. Never raises."""
        try:
            if not self._leader.lead():
                return False
            now = self.clock()
            seen: set[tuple[str, int]] = set()
            try:
                for model, version, report in self.build_reports():
                    try:
                        seen.add((model, int(version)))
                        evaluations = evaluate(self.manager.rules.values(), model, version, report, now)
                        self.manager.apply(model, version, evaluations, now)
                    except Exception:
                        self.failures += 1
                        log.exception("alert evaluation failed", extra={"model": model, "version": version})
            except Exception:
                self.failures += 1
                log.exception("alert reports could not be built; trying again next round")
            else:
                if self.retire_missing:
                    self.manager.retire(seen, now)
            self.runs += 1
            return True
        except Exception:  # the loop must outlive anything
            self.failures += 1
            log.exception("alert loop round failed")
            return False

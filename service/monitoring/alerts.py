"""Alert rules over monitoring reports: load and check them, evaluate them, keep their state.

Three layers, each usable alone: ``load_rules`` reads the TOML rules (shipped defaults plus an
optional user file) and refuses a bad one whole; ``evaluate`` is pure and turns one model
version's report into a level per rule; ``AlertManager`` keeps each rule's state in the shared
store (SQLite or PostgreSQL) so every worker and replica agrees, and notifies on transitions
exactly once.
``AlertLoop`` runs the evaluation periodically off the request path, in one worker at a time.
Nothing here runs on a request, and nothing imports Flask.
"""

from __future__ import annotations

import fcntl
import logging
import math
import re
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.monitoring.notify import Notification, Notifier
from service.store import Store

log = logging.getLogger(__name__)

DEFAULT_RULES_FILE = Path(__file__).with_name("default_alerts.toml")
NAME_RE = re.compile(r"[a-z0-9_]+")
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda v, t: v > t, ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t, "<=": lambda v, t: v <= t,
    "==": lambda v, t: v == t,
}
RULE_KEYS = frozenset({"name", "description", "metric", "op", "warn", "alert", "samples", "min_samples",
                       "for_seconds", "models"})
FILE_KEYS = frozenset({"rules", "disable", "replace_defaults"})
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
class Rule:
    """One alert rule, as the rules file spells it (see ``default_alerts.toml``)."""

    name: str
    description: str
    metric: str
    op: str
    warn: float | str | None = None
    alert: float | str | None = None
    samples: str = "n"
    min_samples: int = 0
    for_seconds: float = 0.0
    models: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Evaluation:
    """What one rule says about one report: ``level`` ok | warn | alert | insufficient."""

    rule: str
    level: str
    value: float | str | None
    threshold: float | str | None
    samples: int | None = None


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


# --- rules file ----------------------------------------------------------------------------

def load_rules(path: Path | str | None = None) -> list[Rule]:
    """Return the shipped rules, extended by the user file at ``path`` when given.

    A user rule whose name is a shipped one replaces it; new names are added;
    ``disable = [...]`` drops shipped rules by name; ``replace_defaults = true`` drops them all.
    Raises ``ValueError`` naming the file, the rule and the key for anything wrong.
    """
    defaults, _, _ = _read_file(DEFAULT_RULES_FILE)
    if path is None:
        return defaults
    user, disable, replace = _read_file(Path(path))
    by_name = {} if replace else {r.name: r for r in defaults}
    for name in disable:
        if name not in by_name:
            raise ValueError(f"alert rules file {path}: disable names unknown rule {name!r}")
        del by_name[name]
    for rule in user:
        by_name[rule.name] = rule
    return list(by_name.values())


def _read_file(path: Path) -> tuple[list[Rule], list[str], bool]:
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"alert rules file {path}: cannot read it ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"alert rules file {path}: not valid TOML ({exc})") from exc
    where = f"alert rules file {path}"
    unknown = sorted(set(doc) - FILE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown top-level key {unknown[0]!r} (expected {sorted(FILE_KEYS)})")
    tables = doc.get("rules", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: 'rules' must be an array of tables ([[rules]])")
    disable = doc.get("disable", [])
    if not isinstance(disable, list) or not all(isinstance(n, str) for n in disable):
        raise ValueError(f"{where}: 'disable' must be a list of rule names")
    replace = doc.get("replace_defaults", False)
    if not isinstance(replace, bool):
        raise ValueError(f"{where}: 'replace_defaults' must be true or false")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, table in enumerate(tables, start=1):
        rule = parse_rule(table, where, i)
        if rule.name in seen:
            raise ValueError(f"{where}: rule {rule.name!r}: key 'name': duplicate rule name")
        seen.add(rule.name)
        rules.append(rule)
    return rules, disable, replace


def parse_rule(table: dict[str, Any], source: str = "alert rules", index: int = 1) -> Rule:
    """Build a ``Rule`` from one TOML table, or raise ``ValueError`` naming the rule and key."""
    name = table.get("name")
    where = f"{source}: rule {name!r}" if isinstance(name, str) and NAME_RE.fullmatch(name) else f"{source}: rule #{index}"

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"{where}: key {key!r}: {why}")

    for key in table:
        if key not in RULE_KEYS:
            raise bad(key, f"unknown key (expected one of {sorted(RULE_KEYS)})")
    for key in ("name", "description", "metric", "op"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise bad(key, "required, a non-empty string")
    if not NAME_RE.fullmatch(table["name"]):
        raise bad("name", "must match [a-z0-9_]+")
    op = table["op"]
    if op not in OPS:
        raise bad("op", f"{op!r} is not one of {list(OPS)}")
    if "warn" not in table and "alert" not in table:
        raise bad("alert", "a rule needs a warn or an alert threshold (or both)")
    for key in ("warn", "alert"):
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad(key, "must be a number or a status string")
        if isinstance(value, str) and op != "==":
            raise bad(key, f"a status threshold needs op '==', not {op!r}")
    warn, alert = table.get("warn"), table.get("alert")
    if _is_number(warn) and _is_number(alert) and op != "==" and OPS[op](warn, alert) and warn != alert:
        raise bad("warn", f"warn {warn} is beyond alert {alert} for op {op!r}")
    for key in ("samples", "metric"):
        if key in table and (not isinstance(table[key], str) or not all(table[key].split("."))):
            raise bad(key, "must be a dotted path such as 'traffic.requests'")
    min_samples = table.get("min_samples", 0)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 0:
        raise bad("min_samples", "must be a whole number >= 0")
    for_seconds = table.get("for_seconds", 0)
    if isinstance(for_seconds, bool) or not isinstance(for_seconds, int | float) or not 0 <= for_seconds < math.inf:
        raise bad("for_seconds", "must be a number of seconds >= 0")
    models = table.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
        raise bad("models", "must be a list of model names")
    return Rule(name=table["name"], description=table["description"], metric=table["metric"], op=op,
                warn=warn, alert=alert, samples=table.get("samples", "n"), min_samples=min_samples,
                for_seconds=float(for_seconds), models=tuple(models) if models is not None else None)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- evaluation (pure) ---------------------------------------------------------------------

def lookup(report: dict[str, Any], path: str) -> Any:
    """Return the value at dotted ``path`` in ``report``, or ``None`` when any step is missing."""
    node: Any = report
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if hasattr(node, "item"):  # numpy scalars: plain Python values for SQLite and JSON
        node = node.item()
    return node


def evaluate(rules: Iterable[Rule], model: str, version: int | str, report: dict[str, Any],
             now: float | None = None) -> list[Evaluation]:
    """Return each applicable rule's level for one model version's report (``now`` is unused; kept for symmetry)."""
    return [evaluate_rule(rule, report) for rule in rules if rule.models is None or model in rule.models]


def evaluate_rule(rule: Rule, report: dict[str, Any]) -> Evaluation:
    """Return ``rule``'s level for ``report``: insufficient without enough samples or a value."""
    nearest = rule.warn if rule.warn is not None else rule.alert
    samples = lookup(report, rule.samples)
    samples = int(samples) if _is_number(samples) and math.isfinite(samples) else None
    value = lookup(report, rule.metric)
    if _is_number(value) and not math.isfinite(value):
        value = None  # NaN means "no data", and JSON cannot carry it
    if samples is None or samples < rule.min_samples or value is None or value == "insufficient":
        return Evaluation(rule.name, "insufficient", value, nearest, samples)
    for level, threshold in (("alert", rule.alert), ("warn", rule.warn)):
        if threshold is not None and _compare(rule.op, value, threshold):
            return Evaluation(rule.name, level, value, threshold, samples)
    return Evaluation(rule.name, "ok", value, nearest, samples)


def _compare(op: str, value: Any, threshold: Any) -> bool:
    if _is_number(threshold) != _is_number(value):
        return False  # a status never crosses a numeric threshold, nor a number a status one
    return OPS[op](value, threshold)


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
                 on_state: Callable[[str, int, str, int], None] | None = None, timeout: float = 10.0):
        self.store = store if isinstance(store, Store) else Store(store)  # a path: a SQLite file
        self.rules = {rule.name: rule for rule in rules}
        self.notifier = notifier if notifier is not None else Notifier()
        #: Called as ``on_state(model, version, rule, STATE_VALUES[state])``, e.g. to set a gauge.
        self.on_state = on_state
        self.timeout = timeout  # seconds an evaluation may wait for the store's write lock
        self._upsert = self.store.insert_sql("alerts", ALERT_COLUMNS, conflict="replace", key=ALERT_COLUMNS[:3])
        self.store.create_tables(SCHEMA)

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
        rows = self.store.query("SELECT * FROM alerts" + (" WHERE model = ?" if model is not None else ""),
                                (model,) if model is not None else ())
        wanted = set(only) if only is not None else None
        unpack = self.store.unpack
        docs = [{"model": r["model"], "version": r["version"], "rule": r["rule"],
                 "description": self.rules[r["rule"]].description, "state": r["state"], "since": r["since"],
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
        self.lock_path = Path(lock_path) if lock_path else manager.store.lock_path(LOCK)  # None: a database lock
        self.clock = clock
        self.retire_missing = retire_missing
        #: Rounds evaluated by this process, and failures (a builder or a version that raised).
        self.runs = self.failures = 0
        self.last_run: float | None = None
        self._lock_file: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the daemon thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="alert-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and give up the evaluator's lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)

    def _lead(self) -> bool:
        if self._lock_file is not None:
            if not self._lock_file.closed:
                return True
            self._lock_file = None  # the database session, and its lock, ended: elect again
        if self.lock_path is None:
            self._lock_file = self.manager.store.hold_lock(LOCK)
            return self._lock_file is not None
        f = open(self.lock_path, "a+")  # held open for as long as we lead
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._lock_file = f
        return True

    def run_once(self) -> bool:
        """Evaluate every report now if this process is the evaluator; return whether it was. Never raises."""
        try:
            if not self._lead():
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
            self.last_run = now
            return True
        except Exception:  # the loop must outlive anything
            self.failures += 1
            log.exception("alert loop round failed")
            return False

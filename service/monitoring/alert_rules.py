"""Alert rules: read the TOML rules (shipped defaults plus an optional user file) and evaluate them.

``load_rules`` refuses a bad file whole, naming the rule and the key; ``evaluate`` is pure and
turns one model version's monitoring report into a level per rule. No state, no Flask.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_RULES_FILE = Path(__file__).with_name("default_alerts.toml")
NAME_RE = re.compile(r"[a-z0-9_]+")
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda v, t: v > t, ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t, "<=": lambda v, t: v <= t,
    "==": lambda v, t: v == t,
}
RULE_KEYS = frozenset({"name", "description", "metric", "op", "warn", "alert", "samples", "min_samples",
                       "for_seconds", "models", "action", "retrain"})
#: What a rule may do besides notifying when it fires.
ACTIONS = ("retrain",)
#: Keys of a rule's ``[rules.retrain]`` table: the options of ``python -m service retrain``.
RETRAIN_KEYS = frozenset({"train", "target", "since", "holdout_last", "min_gain", "then"})
THEN_RE = re.compile(r"shadow|canary:(100|[1-9][0-9]?)(\.[0-9]+)?%?")
FILE_KEYS = frozenset({"rules", "disable", "replace_defaults"})


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
    #: ``retrain``: when the rule starts firing, fit a challenger (``service.retrain``) and notify its outcome
    action: str | None = None
    #: the retrain options (``train`` at least; ``then`` may start a shadow or a canary, never a promotion)
    retrain: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Evaluation:
    """What one rule says about one report: ``level`` ok | warn | alert | insufficient."""

    rule: str
    level: str
    value: float | str | None
    threshold: float | str | None
    samples: int | None = None


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
    action, retrain = _action(table, bad)
    return Rule(name=table["name"], description=table["description"], metric=table["metric"], op=op,
                warn=warn, alert=alert, samples=table.get("samples", "n"), min_samples=min_samples,
                for_seconds=float(for_seconds), models=tuple(models) if models is not None else None,
                action=action, retrain=retrain)


def _action(table: dict[str, Any], bad: Callable[[str, str], ValueError]) -> tuple[str | None, tuple[tuple[str, Any], ...]]:
    """Check a rule's ``action`` and its ``[rules.retrain]`` options."""
    action = table.get("action")
    if action is None:
        if "retrain" in table:
            raise bad("retrain", "needs action = \"retrain\"")
        return None, ()
    if action not in ACTIONS:
        raise bad("action", f"{action!r} is not one of {list(ACTIONS)}")
    options = table.get("retrain")
    if not isinstance(options, dict) or not isinstance(options.get("train"), str) or not options["train"]:
        raise bad("retrain", "action \"retrain\" needs a [rules.retrain] table with train = \"<base data file>\"")
    unknown = sorted(set(options) - RETRAIN_KEYS)
    if unknown:
        raise bad("retrain", f"unknown option {unknown[0]!r} (expected one of {sorted(RETRAIN_KEYS)})")
    for key in ("target", "since", "holdout_last", "then"):
        if key in options and not isinstance(options[key], str):
            raise bad(f"retrain.{key}", "must be a string")
    if "then" in options and not THEN_RE.fullmatch(options["then"]):
        raise bad("retrain.then", "must be \"shadow\" or \"canary:W\" (a rule never promotes: that stays a person's call)")
    if "min_gain" in options and not (_is_number(options["min_gain"]) and options["min_gain"] >= 0):
        raise bad("retrain.min_gain", "must be a number >= 0")
    return action, tuple(sorted(options.items()))


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

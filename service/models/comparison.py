"""Per-version live figures from the shared store: traffic, errors, latency, predictions, shadows.

The maths (``version_figures``, ``shadow_figures``) is pure and takes rows of the ``requests``
and ``shadow`` tables; ``window_figures`` gives the same figures from a bounded read of the store
(``service.store.traffic``): counts exact, latency percentiles and predictions from the newest
``MAX_TRAFFIC_ROWS`` requests of each version, and ``latency_sample`` says how many when the
window held more. ``compare`` reads one window from the store and the registry state and
returns a JSON-ready document; ``format_table`` renders it for the CLI. Nothing here changes
the registry (that is ``guard``'s job) and nothing imports Flask.

How a request is attributed, so that a canary's figures say how it treats the traffic sent to it:

- a request answered normally counts for the version that answered;
- a request answered by fallback counts for the version that failed (``fallback_from``) as a
  request, an error and a ``fallbacks_from``; and for the version that answered as a request
  and a ``fallbacks_to``, an error for it only when the fallback failed too;
- latency belongs to the version the request was sent to first: a fallback's latency (failed
  attempt plus rescue) is what users routed to the failing version waited;
- client errors (4xx) never count against a version: they are only counted, as ``client_errors``.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.models import registry
from service.store import traffic

PERCENTILES = (50, 95, 99)
FALLBACK = "fallback"
#: Newest requests per version that latency percentiles and prediction figures are computed from.
#: Counts and rates are exact whatever the window; 20,000 latencies give a p99 within a fraction of
#: a percent of the whole window's while a worker reads ~10 MB instead of one row per request.
MAX_TRAFFIC_ROWS = 20_000


def version_figures(rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Aggregate ``requests`` rows into figures per version (see the module docstring)."""
    acc: dict[int, _VersionAccumulator] = defaultdict(_VersionAccumulator)
    for row in rows:
        row = dict(row)
        status, version, failed = int(row["status"]), row.get("version"), row.get("fallback_from")
        is_fallback = row.get("role") == FALLBACK and failed is not None
        if 400 <= status < 500:
            if version is not None:
                acc[int(version)].client_errors += 1
            continue
        server_error = status >= 500
        rows_n = int(row.get("rows") or 0)
        latency = float(row["latency_ms"])
        if is_fallback:
            first = acc[int(failed)]
            first.add_request(rows_n, latency, error=True)
            first.fallbacks_from += 1
        if version is None:
            continue
        answered = acc[int(version)]
        answered.roles[str(row.get("role"))] += 1
        if is_fallback:
            answered.add_request(rows_n, None, error=server_error)
            answered.fallbacks_to += 1
        else:
            answered.add_request(rows_n, latency, error=server_error)
        if not server_error:
            answered.add_summary(row.get("summary"))
    return {version: a.figures() for version, a in sorted(acc.items())}


def traffic_figures(store: Any, name: str, since: float, limit: int | None = None,
                    versions: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """Return ``version_figures`` of the requests of ``name`` since ``since``, read bounded
    (``window_figures``); of ``versions`` only, when given."""
    limit = MAX_TRAFFIC_ROWS if limit is None else limit
    return window_figures(store.traffic(name, since, limit, versions=versions))


def window_figures(window: traffic.Window) -> dict[int, dict[str, Any]]:
    """Aggregate a ``traffic.Window`` into the figures ``version_figures`` gives for the same rows:
    counts from the window's groups, latencies and predictions from its newest rows per version."""
    acc: dict[int, _VersionAccumulator] = defaultdict(_VersionAccumulator)
    for group in window.groups:
        n, is_fallback = group.requests, group.role == FALLBACK and group.fallback_from is not None
        if group.status_class == traffic.CLIENT_ERROR:
            if group.version is not None:
                acc[group.version].client_errors += n
            continue
        if is_fallback:
            first = acc[group.fallback_from]
            first.count(n, group.rows, errors=n)
            first.fallbacks_from += n
        if group.version is None:
            continue
        answered = acc[group.version]
        answered.roles[group.role] += n
        answered.count(n, group.rows, errors=n if group.status_class == traffic.SERVER_ERROR else 0)
        if is_fallback:
            answered.fallbacks_to += n
    for version, rows in window.samples.items():
        sampled = acc[version]
        for row in reversed(rows):  # oldest first, as ``version_figures`` meets them
            failed = row["fallback_from"] if row["role"] == FALLBACK else None
            if (row["version"] if failed is None else failed) == version:
                sampled.latencies.append(float(row["latency_ms"]))
            if row["version"] == version and int(row["status"]) < 400:
                sampled.add_summary(row["summary"])
        if window.truncated(version):
            sampled.sample = len(rows)
    wanted = window.versions
    return {version: a.figures() for version, a in sorted(acc.items()) if wanted is None or version in wanted}


def shadow_figures(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Aggregate ``shadow`` rows into figures per ``"live->shadow"`` pair of versions."""
    acc: dict[tuple[int, int], _ShadowAccumulator] = defaultdict(_ShadowAccumulator)
    for row in rows:
        row = dict(row)
        acc[(int(row["live_version"]), int(row["shadow_version"]))].add(row)
    return {f"{live}->{shadow}": a.figures(live, shadow) for (live, shadow), a in sorted(acc.items())}


def compare(store: Any, root: Path, name: str, window_seconds: float, now: float | None = None,
            limit: int | None = None) -> dict[str, Any]:
    """Return the side-by-side figures of every version of ``name`` over the last ``window_seconds``
    (latencies and predictions from the newest ``limit`` requests per version: ``MAX_TRAFFIC_ROWS``)."""
    now = time.time() if now is None else float(now)
    since = now - float(window_seconds)
    state = registry.read_state(root, name)
    labels = dict(state.get("labels") or {})
    rollout = dict(state.get("rollout") or {})
    versions = traffic_figures(store, name, since, limit)
    # Versions the operator cares about show up even before they see traffic.
    for version in _versions_in_play(labels, rollout):
        versions.setdefault(version, _VersionAccumulator().figures())
    return {
        "model": name,
        "window_seconds": _number(window_seconds),
        "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "labels": labels,
        "rollout": rollout,
        "versions": {str(v): versions[v] for v in sorted(versions)},
        "shadow": shadow_figures(store.shadow_since(name, since)),
    }


def format_table(comparison: Mapping[str, Any]) -> str:
    """Render a ``compare`` document as a plain-text table, one column per version."""
    versions: dict[str, dict[str, Any]] = dict(comparison.get("versions") or {})
    lines = [f"{comparison.get('model')}: last {_fmt_number(comparison.get('window_seconds'))} s "
             f"(since {comparison.get('since')})"]
    if not versions:
        lines.append("no versions and no traffic in this window")
    else:
        roles = _version_roles(comparison.get("labels") or {}, comparison.get("rollout") or {})
        table = [["version", *(f"v{v}" for v in versions)],
                 ["", *(roles.get(int(v), "") for v in versions)]]
        for label, cell in _TABLE_ROWS:
            table.append([label, *(cell(f) for f in versions.values())])
        table.extend(_prediction_rows(list(versions.values())))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            first = row[0].ljust(widths[0])
            lines.append("  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]).rstrip())
    for version, f in versions.items():
        if f.get("latency_sample"):
            lines.append(f"v{version}: latencies and predictions from its newest {f['latency_sample']} requests")
    for pair, s in (comparison.get("shadow") or {}).items():
        lines.append(f"shadow {pair}: {s['comparisons']} comparisons, {s['rows']} rows, "
                     f"agreement {_fmt_share(s['agreement'])}, mean |diff| {_fmt_number(s['mean_abs_diff'])}, "
                     f"{s['errors']} errors")
    return "\n".join(lines) + "\n"


class _VersionAccumulator:
    def __init__(self) -> None:
        self.requests = self.rows = self.errors = self.client_errors = 0
        self.fallbacks_from = self.fallbacks_to = 0
        self.latencies: list[float] = []
        self.roles: Counter[str] = Counter()
        self.classes: Counter[str] = Counter()
        self.n = 0
        self.total = self.total_sq = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.sample: int | None = None  # requests the latencies were drawn from, when not all

    def count(self, requests: int, rows: int, *, errors: int) -> None:
        self.requests += requests
        self.rows += rows
        self.errors += errors

    def add_request(self, rows: int, latency: float | None, *, error: bool) -> None:
        self.requests += 1
        self.rows += rows
        self.errors += int(error)
        if latency is not None:
            self.latencies.append(latency)

    def add_summary(self, text: str | None) -> None:
        # A malformed summary loses that request's predictions, never the figures.
        try:
            summary = json.loads(text) if text else None
        except ValueError:
            return
        if not isinstance(summary, dict):
            return
        if isinstance(summary.get("classes"), dict):
            for label, count in summary["classes"].items():
                self.classes[str(label)] += int(count)
        elif summary.get("n"):
            try:  # a null sum (non-finite predictions were stored as JSON null) is malformed too
                n, total, total_sq = int(summary["n"]), float(summary.get("sum", 0.0)), float(summary.get("sumsq", 0.0))
                low, high = float(summary.get("min", math.inf)), float(summary.get("max", -math.inf))
            except (TypeError, ValueError):
                return
            self.n += n
            self.total += total
            self.total_sq += total_sq
            self.low = min(self.low, low)
            self.high = max(self.high, high)

    def figures(self) -> dict[str, Any]:
        latencies = np.asarray(self.latencies, dtype=float)
        p50, p95, p99 = np.percentile(latencies, PERCENTILES) if latencies.size else (None, None, None)
        return {
            "requests": self.requests,
            "rows": self.rows,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "client_errors": self.client_errors,
            "fallbacks_from": self.fallbacks_from,
            "fallbacks_to": self.fallbacks_to,
            "p50_ms": _number(p50),
            "p95_ms": _number(p95),
            "p99_ms": _number(p99),
            "mean_ms": _number(latencies.mean()) if latencies.size else None,
            # None: latencies and predictions cover every request counted; else the newest this many
            "latency_sample": self.sample,
            "roles": dict(sorted(self.roles.items())),
            "predictions": self._predictions(),
        }

    def _predictions(self) -> dict[str, Any] | None:
        if self.classes:
            total = sum(self.classes.values())
            counts = dict(sorted(self.classes.items()))
            return {"task": "classification", "n": total, "counts": counts,
                    "shares": {k: (c / total if total else None) for k, c in counts.items()}}
        if self.n:
            mean = self.total / self.n
            return {"task": "regression", "n": self.n, "mean": _number(mean),
                    "std": _number(math.sqrt(max(self.total_sq / self.n - mean * mean, 0.0))),
                    "min": _number(self.low), "max": _number(self.high)}
        return None


class _ShadowAccumulator:
    def __init__(self) -> None:
        self.comparisons = self.rows = self.errors = 0
        self.agree_weight = self.agree_sum = 0.0
        self.diff_weight = self.diff_sum = 0.0
        self.per_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def add(self, row: dict[str, Any]) -> None:
        self.comparisons += 1
        if row.get("error"):
            self.errors += 1
            return
        rows = int(row.get("rows") or 0)
        self.rows += rows
        if row.get("agreement") is not None:
            self.agree_weight += rows
            self.agree_sum += rows * float(row["agreement"])
        if row.get("mean_abs_diff") is not None:
            self.diff_weight += rows
            self.diff_sum += rows * float(row["mean_abs_diff"])
        try:
            detail = json.loads(row["detail"]) if row.get("detail") else {}
        except ValueError:
            detail = {}
        per_class = detail.get("per_class") if isinstance(detail, dict) else None
        for label, counts in (per_class or {}).items():
            self.per_class[str(label)][0] += int(counts.get("rows", 0))
            self.per_class[str(label)][1] += int(counts.get("agree", 0))

    def figures(self, live: int, shadow: int) -> dict[str, Any]:
        return {
            "live_version": live,
            "shadow_version": shadow,
            "comparisons": self.comparisons,
            "rows": self.rows,
            "agreement": _number(self.agree_sum / self.agree_weight) if self.agree_weight else None,
            "mean_abs_diff": _number(self.diff_sum / self.diff_weight) if self.diff_weight else None,
            "errors": self.errors,
            "per_class": {label: {"rows": n, "agree": k, "agreement": k / n if n else None}
                          for label, (n, k) in sorted(self.per_class.items())},
        }


def _versions_in_play(labels: Mapping[str, Any], rollout: Mapping[str, Any]) -> set[int]:
    found = {v for v in labels.values() if isinstance(v, int)}
    canary = rollout.get("canary")
    if isinstance(canary, dict) and isinstance(canary.get("version"), int):
        found.add(canary["version"])
    found.update(v for v in rollout.get("shadow") or [] if isinstance(v, int))
    if isinstance(rollout.get("fallback"), int):
        found.add(rollout["fallback"])
    return found


def _version_roles(labels: Mapping[str, Any], rollout: Mapping[str, Any]) -> dict[int, str]:
    roles: dict[int, list[str]] = defaultdict(list)
    for label, version in sorted(labels.items(), key=lambda item: (item[0] != registry.PRODUCTION, item[0])):
        roles[version].append(label)
    canary = rollout.get("canary")
    if isinstance(canary, dict) and canary.get("version") is not None:
        roles[canary["version"]].append(f"canary {_fmt_number(canary.get('weight'))}%")
    for version in rollout.get("shadow") or []:
        roles[version].append("shadow")
    if rollout.get("fallback") is not None:
        roles[rollout["fallback"]].append("fallback")
    return {v: ", ".join(r) for v, r in roles.items()}


def _prediction_rows(figures: list[dict[str, Any]]) -> list[list[str]]:
    predictions = [f.get("predictions") or {} for f in figures]
    classes = sorted({c for p in predictions for c in (p.get("shares") or {})}, key=_class_order)
    rows = [[f"class {c} share", *(_fmt_share(p["shares"].get(c, 0.0) if "shares" in p else None) for p in predictions)]
            for c in classes]
    if any(p.get("task") == "regression" for p in predictions):
        for key in ("mean", "std", "min", "max"):
            rows.append([f"prediction {key}", *(_fmt_number(p.get(key)) for p in predictions)])
    return rows


def _class_order(label: str) -> tuple[int, float, str]:
    try:
        return 0, float(label), label
    except ValueError:
        return 1, 0.0, label


def _number(value: Any) -> float | None:
    """Return ``value`` as a finite Python float, or ``None`` (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt_number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(int(value)) if isinstance(value, float) else str(value)


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


_TABLE_ROWS = (
    ("requests", lambda f: str(f["requests"])),
    ("rows", lambda f: str(f["rows"])),
    ("errors", lambda f: str(f["errors"])),
    ("error rate", lambda f: _fmt_share(f["error_rate"])),
    ("client errors", lambda f: str(f["client_errors"])),
    ("fallbacks from", lambda f: str(f["fallbacks_from"])),
    ("fallbacks to", lambda f: str(f["fallbacks_to"])),
    ("p50 ms", lambda f: _fmt_ms(f["p50_ms"])),
    ("p95 ms", lambda f: _fmt_ms(f["p95_ms"])),
    ("p99 ms", lambda f: _fmt_ms(f["p99_ms"])),
    ("mean ms", lambda f: _fmt_ms(f["mean_ms"])),
)

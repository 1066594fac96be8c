"""Turn monitoring reports into what the monitoring page shows: view-model dicts and inline SVG.

Pure: plain dicts in, plain dicts and ``markupsafe.Markup`` SVG strings (``charts``) out; no Flask, no I/O.
Reports come from outside and may lack any section (a version with no traffic yet, no
feedback, no alerts), so every reader here tolerates missing or malformed parts and says so
with an empty state instead of failing. Text that reaches SVG is escaped in ``charts``; the
templates escape the rest (Jinja autoescape).

An alert names its rule's ``metric``; for a status rule over a whole section (``drift.status``,
``quality.status``) the findings it shows, feature by feature, come from the same report the
page draws, so the alert row and the tables below it always agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from service.monitoring.charts import (  # noqa: F401  (fmt_* are part of this module's surface)
    MISSING,
    distribution_chart,
    finite_number,
    fmt_duration,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_time,
    fmt_utc,
    iso_utc,
    line_chart,
    moment,
    traffic_chart,
)

#: Severity order; a summary takes the worst status of its parts.
SEVERITY = {"unknown": 0, "insufficient": 0, "ok": 1, "warn": 2, "alert": 3}
STATUS_TEXT = {"ok": "✓ ok", "warn": "! warn", "alert": "✕ alert", "insufficient": "… insufficient data",
               "unknown": "– no data"}
#: Alert states that count as active, most urgent first.
ACTIVE_ALERT_STATES = ("firing", "warn", "pending")
ALERT_TO_STATUS = {"firing": "alert", "warn": "warn", "pending": "warn"}
ALERT_TEXT = {"firing": "✕ firing", "warn": "! warn", "pending": "… pending"}
SECTIONS = ("drift", "quality", "performance", "bias")
QUALITY_RATES = ("missing_rate", "out_of_range_rate", "unseen_rate")
#: Quality checks as the report names them, and the words the page uses.
QUALITY_CHECKS = {"missing": "missing", "out_of_range": "out of range", "unseen": "unseen categories"}
#: Findings listed per alert; the section's own table below has the rest.
MAX_FINDINGS = 5
#: A rule metric about one feature, e.g. ``drift.features.age.psi`` (names may hold dots).
FEATURE_METRIC = re.compile(r"(?:drift|quality|bias)\.features\.(?P<feature>.+)\.[a-z0-9_]+")
OP_TEXT = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "="}

# -- small readers -----------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def status_of(value: Any) -> str:
    """Return a known status name for ``value`` (``unknown`` for anything else)."""
    return value if isinstance(value, str) and value in SEVERITY else "unknown"


def worst(statuses: Iterable[str]) -> str:
    """Return the most severe of ``statuses`` (``unknown`` when there are none)."""
    return max((status_of(s) for s in statuses), key=SEVERITY.__getitem__, default="unknown")


def badge(status: Any) -> dict[str, str]:
    """Return what a status badge needs: a CSS class and words (colour is not the only signal)."""
    name = status_of(status)
    return {"status": name, "text": STATUS_TEXT[name]}


# -- view models -------------------------------------------------------------------------------


def overview_view(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Summarise each model report into one overview card (versions, labels, worst status)."""
    cards = []
    for report in reports:
        model = model_view(report)
        cards.append({key: model[key] for key in ("model", "status", "badge", "alerts", "labels", "window")}
                     | {"versions": [{k: v[k] for k in ("version", "labels", "status", "badge", "traffic")}
                                     for v in model["versions"]]})
    return sorted(cards, key=lambda card: card["model"])


def model_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """Build everything the per-model page shows from one monitoring report."""
    report = _dict(report)
    name = str(report.get("model", "") or "")
    labels = {str(k): v for k, v in _dict(report.get("labels")).items()}
    window = _dict(report.get("window"))
    alerts = alerts_view(report.get("alerts"), report.get("versions"), now=window.get("until"))
    versions = []
    for key, body in _dict(report.get("versions")).items():
        on = sorted(label for label, v in labels.items() if str(v) == str(key))
        versions.append(version_view(str(key), _dict(body), on, [a for a in alerts if a["version"] == str(key)]))
    versions.sort(key=_version_order)
    status = worst([*(v["status"] for v in versions), *(a["status"] for a in alerts)])
    return {"model": name, "status": status, "badge": badge(status), "window": window_text(window),
            "labels": sorted(labels.items()), "rollout": rollout_text(report.get("rollout")),
            "alerts": alerts, "versions": versions}


def _version_order(view: Mapping[str, Any]) -> tuple[int, int, str]:
    """Production first, then other labelled versions, then the rest; newest first within each."""
    rank = 0 if "production" in view["labels"] else 1 if view["labels"] else 2
    return rank, -int(view["version"]) if view["version"].isdigit() else 0, view["version"]


def version_view(version: str, body: Mapping[str, Any], labels: list[str], alerts: list[dict]) -> dict[str, Any]:
    """Build one version's panel: traffic, performance, drift, quality, bias."""
    sections = {
        "traffic": traffic_view(body.get("traffic")),
        "performance": performance_view(body.get("performance")),
        "drift": drift_view(body.get("drift")),
        "quality": quality_view(body.get("quality")),
        "bias": bias_view(body.get("bias")),
    }
    status = worst([*(sections[s]["status"] for s in SECTIONS if sections[s]), *(a["status"] for a in alerts)])
    return {"version": version, "labels": labels, "n": fmt_num(body.get("n")), "status": status,
            "badge": badge(status), "alerts": alerts, **sections}


def window_text(window: Any) -> str:
    window = _dict(window)
    parts = []
    if finite_number(window.get("last_n")) is not None:
        parts.append(f"last {fmt_num(window['last_n'])} predictions")
    for key in ("since", "until"):
        when = moment(window.get(key))
        if when is not None:
            parts.append(f"{key} {fmt_utc(when)}")
        elif window.get(key):
            parts.append(f"{key} {window[key]}")
    return ", ".join(parts) or "the default window"


def time_view(value: Any, now: Any = None) -> dict[str, str] | None:
    """Return a time as people read it (UTC), as machines do (ISO 8601) and how long ago it was."""
    when = moment(value)
    if when is None:
        return None
    view = {"text": fmt_utc(when), "datetime": iso_utc(when), "ago": ""}
    reference = moment(now)
    # ``now`` may be rounded down to the second: a moment just after it is still "0 s" ago
    if reference is not None and (elapsed := (reference - when).total_seconds()) > -1:
        view["ago"] = fmt_duration(max(elapsed, 0.0))
    return view


def rollout_text(rollout: Any) -> str:
    rollout = _dict(rollout)
    parts = []
    canary = _dict(rollout.get("canary"))
    if canary:
        parts.append(f"canary v{canary.get('version', '?')} at {fmt_num(canary.get('weight'))}%")
    shadow = _list(rollout.get("shadow"))
    if shadow:
        parts.append("shadow " + ", ".join(f"v{v}" for v in shadow))
    if rollout.get("fallback") is not None:
        parts.append(f"fallback v{rollout['fallback']}")
    return "; ".join(parts)


def alerts_view(alerts: Any, versions: Any = None, now: Any = None) -> list[dict[str, Any]]:
    """Return the active alerts, most urgent first, each with what it measured and since when.

    ``versions`` is the report's per-version sections (where a section-wide alert finds its
    features); ``now`` the time the report was made (for "how long ago").
    """
    versions = _dict(versions)
    rows = []
    for alert in _list(alerts):
        alert = _dict(alert)
        state = alert.get("state")
        if state not in ACTIVE_ALERT_STATES:
            continue
        status = ALERT_TO_STATUS[state]
        version = str(alert.get("version", ""))
        findings = alert_findings(alert, _dict(versions.get(version)))
        rows.append({"state": state, "status": status, "badge": {"status": status, "text": ALERT_TEXT[state]},
                     "version": version, "rule": str(alert.get("rule", "")),
                     "description": str(alert.get("description", "") or ""),
                     "findings": findings[:MAX_FINDINGS], "more": max(len(findings) - MAX_FINDINGS, 0),
                     "feature": ", ".join(f["feature"] for f in findings if f["feature"] != MISSING),
                     "since": time_view(alert.get("since"), now)})
    rows.sort(key=lambda row: ACTIVE_ALERT_STATES.index(row["state"]))
    return rows


def alert_findings(alert: Mapping[str, Any], section: Mapping[str, Any]) -> list[dict[str, str]]:
    """Say what an alert measured: which feature(s), the value and the threshold, worst first."""
    metric = str(alert.get("metric", "") or "")
    found: list[dict[str, str]] = []
    if metric == "drift.status":
        found = drift_findings(_dict(section.get("drift")))
    elif metric == "drift.prediction.status":
        found = drift_findings(_dict(section.get("drift")), prediction_only=True)
    elif metric == "quality.status":
        found = quality_findings(_dict(section.get("quality")))
    if found:
        return found
    named = FEATURE_METRIC.fullmatch(metric)
    feature = named["feature"] if named else str(alert.get("feature", "") or "") or MISSING
    return [{"feature": feature, "value": _value_text(alert.get("value")),
             "threshold": _threshold_text(alert.get("op"), alert.get("threshold"))}]


def drift_findings(drift: Mapping[str, Any], *, prediction_only: bool = False) -> list[dict[str, str]]:
    """The drifting features (and the prediction), worst first, with the figures that judged them."""
    entries = [] if prediction_only else list(_dict(drift.get("features")).items())
    if drift.get("prediction"):
        entries.insert(0, ("prediction", drift["prediction"]))
    limits = _dict(drift.get("thresholds"))
    found = []
    for name, body in entries:
        body = _dict(body)
        status = status_of(body.get("status"))
        if status not in ("warn", "alert"):
            continue
        pvalue_key = next((k for k in ("ks_pvalue", "chi2_pvalue") if finite_number(body.get(k)) is not None), None)
        value = f"PSI {fmt_num(body.get('psi'))}"
        if pvalue_key:
            value += f", p {fmt_num(body[pvalue_key])} ({'KS' if pvalue_key == 'ks_pvalue' else 'χ²'})"
        found.append({"feature": str(name), "status": status, "value": value,
                      "threshold": _drift_threshold(status, pvalue_key, body.get("kind"), limits)})
    found.sort(key=lambda row: -SEVERITY[row["status"]])
    return found


def _drift_threshold(status: str, pvalue_key: str | None, kind: Any, limits: Mapping[str, Any]) -> str:
    """Word the rule of ``service.monitoring.drift`` that gave this status, with the report's numbers."""
    if not limits:
        return MISSING
    if pvalue_key is None:  # no test could run: PSI alone decides
        return f"PSI ≥ {fmt_num(limits.get('psi_alert' if status == 'alert' else 'psi_warn'))}"
    evidence = f"p < {fmt_num(limits.get('p_value'))}"
    if status == "warn":
        return evidence
    material = f"PSI ≥ {fmt_num(limits.get('psi_warn'))}"
    if kind == "numeric":
        material = f"({material} or KS D ≥ {fmt_num(limits.get('ks_material'))})"
    return f"{evidence} and {material}"


def quality_findings(quality: Mapping[str, Any]) -> list[dict[str, str]]:
    """The features whose missing, out-of-range or unseen rate crossed a threshold, worst first."""
    limits = _dict(quality.get("thresholds"))
    found = []
    for name, body in _dict(quality.get("features")).items():
        body = _dict(body)
        for check, words in QUALITY_CHECKS.items():
            status = status_of(body.get(f"{check}_status"))
            if status not in ("warn", "alert"):
                continue
            limit = fmt_pct(limits.get(f"{check}_{status}"))
            reference = finite_number(body.get(f"reference_{check}_rate"))
            over = f" above the reference {fmt_pct(reference)}" if reference else ""
            found.append({"feature": str(name), "status": status, "value": f"{words} {fmt_pct(body.get(f'{check}_rate'))}",
                          "threshold": MISSING if limit == MISSING else f"≥ {limit}{over}"})
    found.sort(key=lambda row: -SEVERITY[row["status"]])
    return found


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) and value else fmt_num(value)


def _threshold_text(op: Any, threshold: Any) -> str:
    text = _value_text(threshold)
    return f"{OP_TEXT[op]} {text}" if op in OP_TEXT and text != MISSING else text


def traffic_view(traffic: Any) -> dict[str, Any] | None:
    traffic = _dict(traffic)
    if not traffic or not finite_number(traffic.get("requests")):
        return None
    timeline = [_dict(b) for b in _list(traffic.get("timeline"))]
    return {
        "requests": fmt_num(traffic.get("requests")), "errors": fmt_num(traffic.get("errors")),
        "error_rate": fmt_pct(traffic.get("error_rate"), 2), "p50": fmt_ms(traffic.get("p50_ms")),
        "p99": fmt_ms(traffic.get("p99_ms")), "fallback_rate": fmt_pct(traffic.get("fallback_rate"), 2),
        "requests_chart": traffic_chart(timeline), "latency_chart": line_chart(
            [(b.get("start"), b.get("p50_ms")) for b in timeline], label="Median latency over time",
            unit="ms", fmt=fmt_ms, zero_based=True),
    }


def performance_view(performance: Any) -> dict[str, Any] | None:
    performance = _dict(performance)
    if not performance:
        return None
    metrics, reference, delta = (_dict(performance.get(k)) for k in ("metrics", "reference", "delta"))
    rows = [{"name": name, "live": fmt_num(metrics.get(name)), "reference": fmt_num(reference.get(name)),
             "delta": _signed(delta.get(name))} for name in [*metrics, *(k for k in reference if k not in metrics)]]
    names = [*metrics, *reference]
    metric = performance.get("timeline_metric") or ("accuracy" if "accuracy" in names else next(iter(names), "metric"))
    points = [(p.get("start"), p.get("value")) for p in map(_dict, _list(performance.get("timeline")))]
    bounded = all(0 <= v <= 1 for _, v in points if finite_number(v) is not None)
    chart = line_chart(points, label=f"Live {metric} over time", unit="", fmt=fmt_num,
                       reference=finite_number(reference.get(metric)), bounds=(0.0, 1.0) if bounded else None)
    return {"status": status_of(performance.get("status")), "badge": badge(performance.get("status")),
            "labelled": fmt_num(performance.get("labelled")), "metric": metric, "rows": rows, "chart": chart}


def drift_view(drift: Any) -> dict[str, Any] | None:
    drift = _dict(drift)
    if not drift:
        return None
    rows = [_drift_row(str(name), _dict(body)) for name, body in _dict(drift.get("features")).items()]
    rows.sort(key=lambda row: -SEVERITY[row["status"]])  # stable: worst first, report order within a status
    prediction = _drift_row("prediction", _dict(drift.get("prediction"))) if drift.get("prediction") else None
    return {"status": status_of(drift.get("status")), "badge": badge(drift.get("status")),
            "n": fmt_num(drift.get("n")), "rows": rows, "prediction": prediction}


def _drift_row(name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    reference, current = _dict(body.get("reference")), _dict(body.get("current"))
    ref = [finite_number(f) for f in _list(reference.get("frequencies"))]
    cur = [finite_number(f) for f in _list(current.get("frequencies"))]
    categories = [str(c) for c in _list(reference.get("categories"))]
    edges = [finite_number(e) for e in _list(reference.get("edges"))]
    if categories and _list(current.get("categories")):
        by_name = dict(zip(map(str, current["categories"]), cur, strict=False))
        cur = [by_name.get(c) for c in categories]
    bins = categories or [f"{fmt_num(lo)} to {fmt_num(hi)}" for lo, hi in zip(edges, edges[1:], strict=False)]
    pvalue_key = next((k for k in ("ks_pvalue", "chi2_pvalue", "pvalue") if k in body), None)
    return {"name": name, "kind": str(body.get("kind", "") or MISSING), "status": status_of(body.get("status")),
            "badge": badge(body.get("status")), "psi": fmt_num(body.get("psi")),
            "pvalue": fmt_num(body.get(pvalue_key)) if pvalue_key else MISSING,
            "test": {"ks_pvalue": "KS", "chi2_pvalue": "χ²"}.get(pvalue_key or "", ""),
            "chart": distribution_chart(ref, cur, bins, label=f"{name}: reference and current distributions")}


def quality_view(quality: Any) -> dict[str, Any] | None:
    quality = _dict(quality)
    if not quality:
        return None
    features = _dict(quality.get("features"))
    problems = []
    for name, body in features.items():
        body = _dict(body)
        status = status_of(body.get("status"))
        if SEVERITY[status] > SEVERITY["ok"] or any(finite_number(body.get(k)) for k in QUALITY_RATES):
            problems.append({"name": str(name), "status": status, "badge": badge(status),
                             **{k: fmt_pct(body.get(k), 2) for k in QUALITY_RATES}})
    problems.sort(key=lambda row: -SEVERITY[row["status"]])
    return {"status": status_of(quality.get("status")), "badge": badge(quality.get("status")),
            "checked": len(features), "problems": problems}


def bias_view(bias: Any) -> dict[str, Any] | None:
    """Show each sensitive feature's gaps (scalar fields) and per-group figures, whatever they are."""
    bias = _dict(bias)
    if not bias:
        return None
    features = []
    for name, body in _dict(bias.get("features")).items():
        body = _dict(body)
        gaps = [(k.replace("_", " "), fmt_num(v)) for k, v in body.items()
                 if finite_number(v) is not None and not k.endswith("pvalue")]
        evidence = [(k.replace("_", " "), fmt_num(v)) for k, v in body.items()
                    if finite_number(v) is not None and k.endswith("pvalue")]
        groups = {str(g): _dict(figures) for g, figures in _dict(body.get("groups")).items()}
        columns = list(dict.fromkeys(k for figures in groups.values() for k, v in figures.items()
                                     if finite_number(v) is not None))
        features.append({"name": str(name), "status": status_of(body.get("status")), "badge": badge(body.get("status")),
                         "gaps": gaps, "evidence": evidence, "columns": [c.replace("_", " ") for c in columns],
                         "groups": [(g, [fmt_num(figures.get(c)) for c in columns]) for g, figures in groups.items()]})
    return {"status": status_of(bias.get("status")), "badge": badge(bias.get("status")), "features": features}


def _signed(value: Any) -> str:
    number = finite_number(value)
    return MISSING if number is None else ("+" if number > 0 else "") + fmt_num(number)

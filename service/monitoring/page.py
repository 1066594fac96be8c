"""Turn monitoring reports into what the monitoring page shows: view-model dicts and inline SVG.

Pure: plain dicts in, plain dicts and ``markupsafe.Markup`` SVG strings (``charts``) out; no Flask, no I/O.
Reports come from outside and may lack any section (a version with no traffic yet, no
feedback, no alerts), so every reader here tolerates missing or malformed parts and says so
with an empty state instead of failing. Text that reaches SVG is escaped in ``charts``; the
templates escape the rest (Jinja autoescape).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from service.monitoring.charts import (  # noqa: F401  (fmt_* are part of this module's surface)
    MISSING,
    distribution_chart,
    finite_number,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_time,
    line_chart,
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
    alerts = alerts_view(report.get("alerts"))
    versions = []
    for key, body in _dict(report.get("versions")).items():
        on = sorted(label for label, v in labels.items() if str(v) == str(key))
        versions.append(version_view(str(key), _dict(body), on, [a for a in alerts if a["version"] == str(key)]))
    versions.sort(key=_version_order)
    status = worst([*(v["status"] for v in versions), *(a["status"] for a in alerts)])
    return {"model": name, "status": status, "badge": badge(status), "window": window_text(report.get("window")),
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
    if window.get("since"):
        parts.append(f"since {window['since']}")
    if window.get("until"):
        parts.append(f"until {window['until']}")
    return ", ".join(parts) or "the default window"


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


def alerts_view(alerts: Any) -> list[dict[str, Any]]:
    """Return the active alerts, most urgent first, with display fields."""
    rows = []
    for alert in _list(alerts):
        alert = _dict(alert)
        state = alert.get("state")
        if state not in ACTIVE_ALERT_STATES:
            continue
        status = ALERT_TO_STATUS[state]
        rows.append({"state": state, "status": status, "badge": {"status": status, "text": ALERT_TEXT[state]},
                     "version": str(alert.get("version", "")), "rule": str(alert.get("rule", "")),
                     "feature": str(alert.get("feature", "") or ""), "since": str(alert.get("since", "") or ""),
                     "value": fmt_num(alert.get("value")), "threshold": fmt_num(alert.get("threshold"))})
    rows.sort(key=lambda row: ACTIVE_ALERT_STATES.index(row["state"]))
    return rows


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

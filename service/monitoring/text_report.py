"""The monitoring report as plain text for a terminal: the worst news first.

Alerts are worded by ``service.monitoring.page`` (the monitoring page's own view of them): the
same findings, values, thresholds and "since" times, so the terminal and the page never disagree.
"""

from __future__ import annotations

from typing import Any

from service.monitoring.page import MISSING, alerts_view

STATUS_MARK = {"ok": "ok   ", "warn": "WARN ", "alert": "ALERT", "insufficient": "  -  "}


def format_report(report: dict[str, Any]) -> str:
    """Render ``Monitoring.model_report`` output as a few readable lines per version."""
    window = report["window"]
    span = f"since {window['since']}" if window.get("since") else f"last {window['last_n']} predictions per version"
    lines = [f"{report['model']}: {span} (until {window['until']})", f"labels: {_pairs(report.get('labels', {}))}"]
    for alert in alerts_view(report.get("alerts"), report.get("versions"), now=window.get("until")):
        lines += _alert_lines(alert)
    if not report.get("versions"):
        lines.append("no version in play has been used yet")
    for version, section in report.get("versions", {}).items():
        traffic = section.get("traffic", {})
        lines.append("")
        lines.append(f"version {version}: {section.get('n', 0)} logged predictions, {traffic.get('requests', 0)} requests "
                     f"in the last hour, error rate {_pct(traffic.get('error_rate'))}, p99 {_ms(traffic.get('p99_ms'))}")
        drift = section.get("drift", {})
        lines.append(f"  drift        {_mark(drift)} {_worst_features(drift.get('features', {}), 'psi')}")
        prediction = drift.get("prediction") or {}
        lines.append(f"  predictions  {_mark(prediction)} psi {_num(prediction.get('psi'))}")
        quality = section.get("quality", {})
        lines.append(f"  quality      {_mark(quality)} counts {_pairs(quality.get('counts', {}))}")
        perf = section.get("performance", {})
        metrics = {k: perf.get("metrics", {}).get(k) for k in list(perf.get("metrics", {}))[:4]}
        lines.append(f"  performance  {_mark(perf)} {perf.get('labelled', 0)} labelled; "
                     f"{_pairs({k: _num(v) for k, v in metrics.items()})}; delta "
                     f"{_pairs({k: _num(v) for k, v in perf.get('delta', {}).items()})}")
        bias = section.get("bias", {})
        lines.append(f"  bias         {_mark(bias)} {', '.join(bias.get('features', {})) or 'no sensitive features'}")
    return "\n".join(lines)


def _alert_lines(alert: dict[str, Any]) -> list[str]:
    """One line per alert with its first finding, then one per further finding (as the page's table)."""
    since = alert["since"]
    when = "" if since is None else f" since {since['text']}" + (f" ({since['ago']} ago)" if since["ago"] else "")
    found = [_finding(f) for f in alert["findings"]] + ([f"and {alert['more']} more"] if alert["more"] else [])
    head = f"  ALERT {alert['state']:<8} v{alert['version']} {alert['rule']}: {found[0] if found else '-'}{when}"
    return [head, *(f"{'':<8}{line}" for line in found[1:])]


def _finding(finding: dict[str, str]) -> str:
    feature = "" if finding["feature"] == MISSING else f"{finding['feature']} "
    return f"{feature}{finding['value']} (threshold {finding['threshold']})"


def _mark(section: dict[str, Any]) -> str:
    return STATUS_MARK.get(section.get("status", "insufficient"), section.get("status", "?"))


def _worst_features(features: dict[str, Any], key: str, top: int = 3) -> str:
    scored = sorted(((f.get(key) or 0.0, name, f.get("status")) for name, f in features.items()), reverse=True)
    return "; ".join(f"{name} {key} {_num(score)} ({status})" for score, name, status in scored[:top])


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items()) or "-"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} ms"

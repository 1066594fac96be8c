"""A retraining run's report as text: the rows used, champion and challenger side by side, the gates.

Pure formatting of the dict ``service.retrain.run.retrain`` returns; ``--json`` prints that dict.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def text(report: dict[str, Any]) -> str:
    """Render the report for a terminal."""
    comparison = report["comparison"]
    rows, base, prod = report["rows"], report["rows"]["base"], report["rows"]["production"]
    lines = [f"retrain {report['model']}: champion version {report['champion']}",
             f"window: predictions since {_when(report['window']['since'])}; hold-out: the newest "
             f"{prod['holdout']} labelled rows (from {_when(report['window']['holdout_from'])})",
             f"base data: {base['kept']} of {base['read']} rows{_left(base['left_out'])}"
             f"{' (row cap reached)' if base['capped'] else ''}",
             f"production: {prod['labelled']} labelled of {prod['scanned']} logged rows{_left(prod['left_out'])}"
             f"{' (row cap reached)' if prod['capped'] else ''}",
             ]
    if prod["unstored_features"]:
        lines.append(f"  inputs not stored by the log (pii): {', '.join(prod['unstored_features'])}")
    lines += [f"fitted on: {rows['fitted_on']} rows ({base['kept']} base + {prod['learned_from']} production)", ""]
    if comparison["champion"]:
        lines += _table(comparison)
        gain = comparison["gain"]
        lines += ["", f"gain on {comparison['metric']}: {gain['value']:+.4f} (95% CI {gain['low']:+.4f} .. "
                      f"{gain['high']:+.4f})", ""]
    lines.append("gates:")
    for gate in comparison["gates"]:
        lines.append(f"  {'pass' if gate['passed'] else 'FAIL'}  {gate['name']:<13} {gate['reason']}")
    lines.append("")
    verdict = "PASSED" if comparison["passed"] else "FAILED"
    lines.append(f"verdict: {verdict} (decided by the {comparison['decided_by']} gate: {comparison['reason']})")
    if report["packaged"]:
        lines.append(f"packaged: {report['model']} version {report['challenger']} (parent {report['champion']})")
    else:
        lines.append("packaged: nothing (give --keep-failed to package a failed challenger)")
    rollout = report.get("rollout")
    if rollout:
        started = "shadow" if rollout["kind"] == "shadow" else f"canary at {rollout['weight']:g}%"
        lines.append(f"rollout: version {rollout['version']} started as {started}")
    return "\n".join(lines) + "\n"


def outcome(report: dict[str, Any]) -> str:
    """One line: what came out of the run."""
    comparison = report["comparison"]
    if report["packaged"]:
        tail = f"; started as {report['rollout']['kind']}" if report.get("rollout") else ""
        return f"{report['model']}: challenger packaged as version {report['challenger']}{tail}"
    return f"{report['model']}: challenger not packaged: {comparison['decided_by']} gate: {comparison['reason']}"


def _table(comparison: dict[str, Any]) -> list[str]:
    champion, challenger = comparison["champion"], comparison["challenger"]
    head = f"{'metric':<18} {'champion':>26} {'challenger':>26}"
    lines = [head, "-" * len(head)]
    for metric in champion:
        if metric not in challenger:
            continue
        mark = "*" if metric == comparison["metric"] else " "
        lines.append(f"{metric + mark:<18} {_cell(champion[metric]):>26} {_cell(challenger[metric]):>26}")
    lines.append(f"(* primary metric; {comparison['holdout_rows']} hold-out rows; 95% bootstrap intervals)")
    return lines


def _cell(figure: dict[str, float]) -> str:
    return f"{figure['value']:.4f} [{figure['low']:.4f}, {figure['high']:.4f}]"


def _left(left_out: dict[str, int]) -> str:
    parts = [f"{n} {reason.replace('_', ' ')}" for reason, n in left_out.items() if n]
    return f"; left out: {', '.join(parts)}" if parts else ""


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

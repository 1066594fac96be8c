"""The issue's performance targets, checked against one run's figures.

Each target is a line with what was measured, the limit and a verdict; a missing figure (a
scenario that failed) is "not measured", never a pass. Nothing here runs anything.
"""

from __future__ import annotations

from typing import Any

from bench.compare import FLOOR, LEAN, NAIVE, SERVER, SERVER_OFF
from bench.models import BOOSTED, FOREST
from bench.workload import CLASSIFIER

VALIDATION_TARGET = 0.25  # validation may cost at most a quarter of the model's predict at 10,000 rows
LATENCY_SPREAD = 3.0  # p99 at most 3x p50
EXTRA_WORKER_SHARE = 0.25  # an extra worker may cost at most a quarter of the first one's PSS
LOG_COST = 0.10  # the prediction log may cost at most 10% of throughput
#: requests per second against the lean naive app at 1 row (at 100 rows: at least as many, for every model)
LEAN_TARGETS = ((CLASSIFIER, "LR", 1.3), (BOOSTED, "HGB", 1.3), (FOREST, "RF", 5.0))


def _run(record: dict[str, Any] | None, variant: str) -> dict[str, Any] | None:
    return None if record is None else record["runs"].get(variant)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(record: dict[str, Any]) -> dict[str, float | None]:
    """This server against the naive app, the floor and itself with monitoring off."""
    on, naive, lean, floor, off = (_run(record, v) or {} for v in (SERVER, NAIVE, LEAN, FLOOR, SERVER_OFF))
    rps_on, rps_off = on.get("requests_per_second"), off.get("requests_per_second")
    return {
        "throughput_vs_naive": _ratio(rps_on, naive.get("requests_per_second")),
        "cpu_vs_naive": _ratio(on.get("cpu_us_per_request"), naive.get("cpu_us_per_request")),
        "throughput_vs_lean": _ratio(rps_on, lean.get("requests_per_second")),
        "cpu_vs_lean": _ratio(on.get("cpu_us_per_request"), lean.get("cpu_us_per_request")),
        "cpu_vs_floor": _ratio(on.get("cpu_us_per_request"), floor.get("cpu_us_per_request")),
        "monitoring_throughput_cost": None if not rps_on or not rps_off else 1 - rps_on / rps_off,
        "cpu_on_vs_off": _ratio(on.get("cpu_us_per_request"), off.get("cpu_us_per_request")),
        "p99_over_p50": _ratio(on.get("p99_ms"), on.get("p50_ms")),
    }


def _line(name: str, measured: float | None, limit: float, at_most: bool, shown: str) -> dict[str, Any]:
    met = None if measured is None else (measured <= limit if at_most else measured >= limit)
    return {"target": name, "measured": measured, "limit": limit, "at_most": at_most, "shown": shown, "met": met}


def _fmt(value: float | None, suffix: str = "x") -> str:
    if value is None:
        return "not measured"
    return f"{value:.1%}" if suffix == "%" else f"{value:.2f}{suffix}"


def check(records: dict[str, dict[str, Any]], recycling: dict[str, Any], memory: dict[str, Any],
          validation: dict[str, float]) -> list[dict[str, Any]]:
    """Every target of the issue, in its order."""
    lines = []
    for model, label in ((CLASSIFIER, "LR"), (BOOSTED, "HGB")):
        value = records.get(f"{model}/1", {}).get("ratios", {}).get("cpu_vs_floor")
        lines.append(_line(f"1 row, {label}: CPU/request <= 2x the floor", value, 2.0, True, _fmt(value)))
    for model, label, times in ((CLASSIFIER, "LR", 2.0), (BOOSTED, "HGB", 2.0), (FOREST, "RF", 5.0)):
        value = records.get(f"{model}/1", {}).get("ratios", {}).get("throughput_vs_naive")
        lines.append(_line(f"1 row, {label}: req/s >= {times:.0f}x the naive app", value, times, False, _fmt(value)))
    for model, label, times in LEAN_TARGETS:
        for rows in (1, 100):
            least = times if rows == 1 else 1.0
            value = records.get(f"{model}/{rows}", {}).get("ratios", {}).get("throughput_vs_lean")
            lines.append(_line(f"{rows} row{'s' if rows > 1 else ''}, {label}: req/s >= {least:g}x the lean naive app",
                               value, least, False, _fmt(value)))
    for record in records.values():
        if record["rows"] >= 10_000:
            value = record["ratios"].get("cpu_vs_naive")
            lines.append(_line(f"10,000 rows, {record['model']}: CPU/row <= the naive app's", value, 1.0, True,
                               _fmt(value)))
    for record in records.values():
        if record["rows"] >= 10_000:
            value = record["ratios"].get("monitoring_throughput_cost")
            lines.append(_line(f"10,000 rows, {record['model']}: monitoring (log + request rows + quality) costs "
                               f"<= {LOG_COST:.0%} of req/s", value, LOG_COST, True, _fmt(value, "%")))
    shipped = recycling.get("runs", {}).get("recycle-conf")
    spread = _ratio(shipped["p99_ms"], shipped["p50_ms"]) if shipped else None
    lines.append(_line(f"p99 <= {LATENCY_SPREAD:.0f}x p50 at {recycling.get('connections')} connections "
                       "(gunicorn.conf.py as shipped)", spread, LATENCY_SPREAD, True, _fmt(spread)))
    share = extra_worker_share(memory.get(SERVER, []))
    lines.append(_line(f"memory per extra worker (USS) <= {EXTRA_WORKER_SHARE:.0%} of a worker's PSS", share,
                       EXTRA_WORKER_SHARE, True, _fmt(share, "%")))
    for model, value in validation.items():
        lines.append(_line(f"10,000 rows, {model}: validation <= {VALIDATION_TARGET:.0%} of the backend's predict (in process)",
                           value, VALIDATION_TARGET, True, _fmt(value, "%")))
    return lines


def extra_worker_share(workers: list[dict[str, Any]]) -> float | None:
    """What one more worker adds (the other workers' private memory, USS, averaged) over the first worker's PSS."""
    if len(workers) < 2:
        return None
    first = workers[0]["pss_mib"]
    extra = sum(w["uss_mib"] for w in workers[1:]) / (len(workers) - 1)
    return extra / first if first else None

"""Turn the measurements into one plain-text table and the same numbers as JSON.

The table is for a person reading a terminal; ``bench/results/latest.json`` is for comparing
runs with a script. Both come from one ``results`` dict so they can never disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.inprocess import InProcessResult
from bench.load import LoadResult, LoadSettings
from bench.workload import Scenario

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "latest.json"
VALIDATION_TARGET = 0.25  # validation may cost at most a quarter of estimator.predict at 10,000 rows


def scenario_record(scenario: Scenario, server: LoadResult | None, local: InProcessResult) -> dict[str, Any]:
    """One scenario's figures, with the ratios that compare server and in-process times."""
    record: dict[str, Any] = {
        "key": scenario.key, "model": scenario.model, "rows": scenario.rows,
        "probabilities": scenario.probabilities, "body_bytes": len(scenario.body),
        "in_process": asdict(local), "server": None, "ratios": {},
    }
    if server is not None:
        record["server"] = asdict(server) | {"rows_per_second": server.requests_per_second * scenario.rows,
                                            "failed": server.failed}
        record["ratios"] = {
            "server_p50_over_estimator": server.p50_ms / local.estimator.median_ms,
            "server_p50_over_full_path": server.p50_ms / local.full_path.median_ms,
        }
    record["ratios"]["validation_over_estimator"] = local.validation.median_ms / local.estimator.median_ms
    record["ratios"]["observe_over_full_path"] = local.observe.median_ms / local.full_path.median_ms
    record["ratios"]["observe_unlogged_over_full_path"] = local.observe_unlogged.median_ms / local.full_path.median_ms
    return record


def _relative(on: float, off: float) -> float | None:
    """(log on - log off) / log off; None when there is nothing to divide by."""
    return (on - off) / off if off else None


def log_ab_records(scenarios: list[Scenario], logged: dict[str, LoadResult],
                   unlogged: dict[str, LoadResult]) -> list[dict[str, Any]]:
    """The same scenarios on two servers, PREDICTION_LOG_SAMPLE=1 and =0, side by side."""
    records = []
    for scenario in scenarios:
        on, off = logged.get(scenario.key), unlogged.get(scenario.key)
        record: dict[str, Any] = {
            "key": scenario.key, "model": scenario.model, "rows": scenario.rows,
            "log_on": None if on is None else asdict(on) | {"failed": on.failed},
            "log_off": None if off is None else asdict(off) | {"failed": off.failed},
            "relative_difference": {},
        }
        if on is not None and off is not None:
            record["relative_difference"] = {
                key: _relative(getattr(on, key), getattr(off, key))
                for key in ("requests_per_second", "p50_ms", "p99_ms")
            }
        records.append(record)
    return records


def failures(records: list[dict[str, Any]], log_ab: list[dict[str, Any]] = ()) -> list[str]:
    """One line per wrk run that saw a non-2xx answer or a socket error (on either server)."""
    runs = [(r["key"], r["server"]) for r in records]
    runs += [(f"{r['key']} (PREDICTION_LOG_SAMPLE=0)", r["log_off"]) for r in log_ab]
    lines = []
    for key, s in runs:
        if s is None or not s["failed"]:
            continue
        errors = ", ".join(f"{k} {v}" for k, v in s["socket_errors"].items() if v)
        lines.append(f"{key}: {s['non2xx']} non-2xx of {s['requests']} responses"
                     + (f" (first status {s['first_bad_status']})" if s["non2xx"] else "")
                     + (f", socket errors: {errors}" if errors else ""))
    return lines


def validation_shares(records: list[dict[str, Any]]) -> dict[str, float]:
    """Validation time / estimator.predict time for each model's largest plain batch."""
    biggest: dict[str, dict[str, Any]] = {}
    for r in records:
        if not r["probabilities"] and r["rows"] >= biggest.get(r["model"], {"rows": 0})["rows"]:
            biggest[r["model"]] = r
    return {model: r["ratios"]["validation_over_estimator"] for model, r in biggest.items()}


def build_results(machine: dict[str, Any], load: LoadSettings, records: list[dict[str, Any]],
                  worker_boots: dict[str, int], extra_failures: list[str],
                  log_ab: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything one run produced, in the shape written to latest.json."""
    log_ab = log_ab or []
    problems = extra_failures + failures(records, log_ab)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load": asdict(load) | {"host": "127.0.0.1"},
        "worker_boots": worker_boots,
        "scenarios": records,
        "prediction_log_on_off": log_ab,
        "validation_share_of_predict": validation_shares(records),
        "validation_target": VALIDATION_TARGET,
        "failures": problems,
        "ok": not problems,
    }


COLUMNS = (  # header, width, getter
    ("model", 13, lambda r: r["model"]),
    ("request", 16, lambda r: f"{r['rows']:,} row{'s' if r['rows'] > 1 else ''}" + (" +proba" if r["probabilities"] else "")),
    ("req/s", 8, lambda r: _num(r, "requests_per_second", 1)),
    ("rows/s", 10, lambda r: _num(r, "rows_per_second", 0)),
    ("p50 ms", 8, lambda r: _num(r, "p50_ms", 2)),
    ("p99 ms", 8, lambda r: _num(r, "p99_ms", 2)),
    ("non-2xx", 7, lambda r: _non2xx(r)),
    ("est ms", 8, lambda r: f"{r['in_process']['estimator']['median_ms']:.3f}"),
    ("path ms", 8, lambda r: f"{r['in_process']['full_path']['median_ms']:.3f}"),
    ("valid ms", 8, lambda r: f"{r['in_process']['validation']['median_ms']:.3f}"),
    ("json ms", 8, lambda r: f"{r['in_process']['json']['median_ms']:.3f}"),
    ("p50/est", 7, lambda r: _ratio(r, "server_p50_over_estimator")),
    ("p50/path", 8, lambda r: _ratio(r, "server_p50_over_full_path")),
)


def _num(record: dict[str, Any], key: str, digits: int) -> str:
    return "-" if record["server"] is None else f"{record['server'][key]:,.{digits}f}"


def _non2xx(record: dict[str, Any]) -> str:
    server = record["server"]
    return "-" if server is None else f"{server['non2xx']}" + ("!!" if server["failed"] else "")


def _ratio(record: dict[str, Any], key: str) -> str:
    value = record["ratios"].get(key)
    return "-" if value is None else f"{value:.1f}x"


def format_table(results: dict[str, Any]) -> str:
    """The whole report as plain text: facts, one row per scenario, then the verdicts."""
    m, load = results["machine"], results["load"]
    versions = "  ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        f"Prediction server benchmark  {results['created_at']}",
        f"machine : {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, {m['platform']}",
        f"          2 processes do {m['parallel_speedup_2_processes']:.2f}x the work of 1 (ideal 2.00); "
        f"load average before the run {m['load_average_before']}",
        f"software: Python {m['python']}  {versions}  {m['wrk']}",
        f"server  : gunicorn -c gunicorn.conf.py, {m['workers']} {m['worker_class']} workers on 127.0.0.1, "
        "worker boots " + ", ".join(f"{name} {n}" for name, n in results["worker_boots"].items())
        + f" (beyond {m['workers']} each: max_requests recycling or crashes)",
        f"load    : wrk {load['seconds']} s per scenario, {load['threads']} thread(s), {load['connections']} connections; "
        "in-process: median of repeats, 1 thread",
        "",
    ]
    header = "  ".join(h.rjust(w) if i > 1 else h.ljust(w) for i, (h, w, _) in enumerate(COLUMNS))
    lines += [header, "-" * len(header)]
    for r in results["scenarios"]:
        lines.append("  ".join(get(r).rjust(w) if i > 1 else get(r).ljust(w) for i, (_, w, get) in enumerate(COLUMNS)))
    lines += ["", "est = estimator.predict on a DataFrame; path = service.serving.inference.predict (resolve, validate, predict, "
              "shape; no HTTP);", "valid = v1.decode + validate_rows alone; json = orjson decode of the body + encode of "
              "the answer; p50/x = server p50 / in-process median.", ""]
    target = results["validation_target"]
    shares = "   ".join(f"{model} {share:.1%} ({'ok' if share < target else 'OVER TARGET'})"
                        for model, share in results["validation_share_of_predict"].items())
    lines.append(f"validation / estimator.predict at 10,000 rows (target < {target:.0%}): {shares}")
    floors = "   ".join(f"{r['model']} {r['in_process']['to_array']['median_ms']:.1f} ms"
                        for r in results["scenarios"] if r["rows"] >= 10_000 and not r["probabilities"])
    lines.append(f"floor under validation at 10,000 rows (np.asarray(instances, float64) alone): {floors}")
    lines += [""] + after_answer_lines(results) + [""] + log_ab_lines(results)
    for problem in results["failures"]:
        lines.append(f"!! FAILED: {problem}")
    lines.append(f"result: {'OK' if results['ok'] else 'FAILED'}")
    return "\n".join(lines)


NOTICEABLE = 0.10  # a change of 10% or more in throughput or latency is called noticeable in the notes


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _row_label(rows: int, probabilities: bool = False) -> str:
    return f"{rows:,} row{'s' if rows > 1 else ''}" + (" +proba" if probabilities else "")


def after_answer_lines(results: dict[str, Any]) -> list[str]:
    """In process: Observer.answered next to the prediction path, log on and off."""
    head = (f"{'model':13}  {'request':16}  {'path ms':>8}  {'after ms':>9}  {'after/path':>10}  "
            f"{'after ms, log off':>17}  {'log off/path':>12}")
    lines = ["After the answer, in process (1 thread): Observer.answered(answer, request_id) with a real "
             "SQLite Store (temp file) and PredictionLog", head, "-" * len(head)]
    for r in results["scenarios"]:
        local, ratios = r["in_process"], r["ratios"]
        lines.append(f"{r['model']:13}  {_row_label(r['rows'], r['probabilities']):16}  "
                     f"{local['full_path']['median_ms']:>8.3f}  {local['observe']['median_ms']:>9.3f}  "
                     f"{ratios['observe_over_full_path']:>9.2f}x  {local['observe_unlogged']['median_ms']:>17.3f}  "
                     f"{ratios['observe_unlogged_over_full_path']:>11.2f}x")
    lines.append("path = service.serving.inference.predict; after = Observer.answered in full (request row, prediction log rows "
                 "with PREDICTION_LOG_SAMPLE=1, metrics, ...);")
    lines.append("log off = the same with PREDICTION_LOG_SAMPLE=0, so after - log off is the prediction log's own cost. "
                 "Fresh prediction ids on every call.")
    return lines


def log_ab_lines(results: dict[str, Any]) -> list[str]:
    """On the server: the same scenarios with the prediction log on and off, and what that shows."""
    ab = results.get("prediction_log_on_off") or []
    if not ab:
        return []
    load = results["load"]
    lines = [f"Prediction log on the server ({ab[0]['model']}; PREDICTION_LOG_SAMPLE=1 vs 0, two otherwise identical "
             f"servers, wrk {load['seconds']} s each, {load['connections']} connections)"]
    head = (f"{'request':12}  {'req/s on':>9}  {'req/s off':>9}  {'diff':>7}  {'p50 on':>8}  {'p50 off':>8}  {'diff':>7}  "
            f"{'p99 on':>8}  {'p99 off':>8}  {'diff':>7}")
    lines += [head, "-" * len(head)]
    for r in ab:
        on, off, diff = r["log_on"], r["log_off"], r["relative_difference"]

        def cell(run: dict[str, Any] | None, key: str, digits: int, width: int) -> str:
            return ("-" if run is None else f"{run[key]:,.{digits}f}").rjust(width)

        lines.append(f"{_row_label(r['rows']):12}  {cell(on, 'requests_per_second', 1, 9)}  "
                     f"{cell(off, 'requests_per_second', 1, 9)}  {_pct(diff.get('requests_per_second')):>7}  "
                     f"{cell(on, 'p50_ms', 2, 8)}  {cell(off, 'p50_ms', 2, 8)}  {_pct(diff.get('p50_ms')):>7}  "
                     f"{cell(on, 'p99_ms', 2, 8)}  {cell(off, 'p99_ms', 2, 8)}  {_pct(diff.get('p99_ms')):>7}")
    lines.append("diff = (log on - log off) / log off.")
    lines += log_ab_notes(results)
    return lines


def log_ab_notes(results: dict[str, Any]) -> list[str]:
    """The notes under the on/off table: how to read it, and what this run's numbers say."""
    ab = [r for r in results.get("prediction_log_on_off") or [] if r["relative_difference"]]
    local = {r["key"]: r for r in results["scenarios"]}
    lines = [
        "notes: the prediction log (with the request row, shadows and counters) is written after the response has been "
        "sent (Werkzeug call_on_close),",
        "  so it never delays the answer it records: it costs worker time, i.e. throughput. gunicorn's sync workers close "
        "the connection after each",
        "  answer and wrk keeps one connection per worker busy (a closed loop at saturation), so the next request waits "
        "in the accept queue while",
        "  a worker finishes logging: here the log's cost shows up in req/s and also in the next request's p50/p99. With "
        "spare workers (traffic",
        "  below capacity) the latency cost would largely disappear and the throughput cost remains.",
    ]
    if not ab:
        return lines
    throughput = ", ".join(f"{_pct(r['relative_difference']['requests_per_second'])} at {_row_label(r['rows'])}" for r in ab)
    latency = ", ".join(f"{_pct(r['relative_difference']['p50_ms'])} at {_row_label(r['rows'])}" for r in ab)
    lines.append(f"  this run: throughput with the log on {throughput}; p50 {latency}.")
    noticeable = [r for r in ab if abs(r["relative_difference"]["requests_per_second"]) >= NOTICEABLE
                  or abs(r["relative_difference"]["p50_ms"]) >= NOTICEABLE]
    if noticeable:
        lines.append("  noticeable (a change of 10% or more) at " + ", ".join(_row_label(r["rows"]) for r in noticeable)
                     + ("; below 10% elsewhere." if len(noticeable) < len(ab) else "."))
    else:
        lines.append("  below 10% at every batch size: not noticeable at this load.")
    worst = max((r for r in local.values() if r["rows"] >= 10_000), key=lambda r: r["ratios"]["observe_over_full_path"],
                default=None)
    if worst is not None:
        after, unlogged = worst["in_process"]["observe"]["median_ms"], worst["in_process"]["observe_unlogged"]["median_ms"]
        lines.append(f"  in process, the work after the answer takes {worst['ratios']['observe_over_full_path']:.1f}x "
                     f"the prediction path at {_row_label(worst['rows'], worst['probabilities'])} ({worst['model']}: "
                     f"{after:.1f} ms after a {worst['in_process']['full_path']['median_ms']:.1f} ms answer), "
                     f"{(after - unlogged) / after:.0%} of it writing the prediction log.")
    return lines


def write_json(results: dict[str, Any], path: Path = RESULTS_FILE) -> Path:
    """Write the results atomically (temp file + rename), so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(results, indent=2) + "\n")
    temp.replace(path)
    return path

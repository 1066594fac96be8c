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
    return record


def failures(records: list[dict[str, Any]]) -> list[str]:
    """One line per scenario that saw a non-2xx answer or a socket error."""
    lines = []
    for r in records:
        s = r["server"]
        if s is None or not s["failed"]:
            continue
        errors = ", ".join(f"{k} {v}" for k, v in s["socket_errors"].items() if v)
        lines.append(f"{r['key']}: {s['non2xx']} non-2xx of {s['requests']} responses"
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
                  worker_boots: int, extra_failures: list[str]) -> dict[str, Any]:
    """Everything one run produced, in the shape written to latest.json."""
    problems = extra_failures + failures(records)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load": asdict(load) | {"host": "127.0.0.1"},
        "worker_boots": worker_boots,
        "scenarios": records,
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
        f"{results['worker_boots']} worker boots during the run (beyond {m['workers']}: max_requests recycling or crashes)",
        f"load    : wrk {load['seconds']} s per scenario, {load['threads']} thread(s), {load['connections']} connections; "
        "in-process: median of repeats, 1 thread",
        "",
    ]
    header = "  ".join(h.rjust(w) if i > 1 else h.ljust(w) for i, (h, w, _) in enumerate(COLUMNS))
    lines += [header, "-" * len(header)]
    for r in results["scenarios"]:
        lines.append("  ".join(get(r).rjust(w) if i > 1 else get(r).ljust(w) for i, (_, w, get) in enumerate(COLUMNS)))
    lines += ["", "est = estimator.predict on a DataFrame; path = service.inference.predict (resolve, validate, predict, "
              "shape; no HTTP);", "valid = parse_predict_request alone; json = orjson decode of the body + encode of "
              "the answer; p50/x = server p50 / in-process median.", ""]
    target = results["validation_target"]
    shares = "   ".join(f"{model} {share:.1%} ({'ok' if share < target else 'OVER TARGET'})"
                        for model, share in results["validation_share_of_predict"].items())
    lines.append(f"validation / estimator.predict at 10,000 rows (target < {target:.0%}): {shares}")
    floors = "   ".join(f"{r['model']} {r['in_process']['to_array']['median_ms']:.1f} ms"
                        for r in results["scenarios"] if r["rows"] >= 10_000 and not r["probabilities"])
    lines.append(f"floor under validation at 10,000 rows (np.asarray(instances, float64) alone): {floors}")
    for problem in results["failures"]:
        lines.append(f"!! FAILED: {problem}")
    lines.append(f"result: {'OK' if results['ok'] else 'FAILED'}")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path = RESULTS_FILE) -> Path:
    """Write the results atomically (temp file + rename), so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(results, indent=2) + "\n")
    temp.replace(path)
    return path

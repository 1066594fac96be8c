"""Turn the measurements into plain-text tables and the same numbers as JSON.

The tables are for a person reading a terminal; ``bench/results/latest.json`` is for comparing
runs with a script. Both come from one ``results`` dict so they can never disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import memory, targets
from bench.compare import RECYCLING
from bench.inprocess import InProcessResult
from bench.load import LoadSettings
from bench.workload import Scenario

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "latest.json"
SHORT = {"server": "this, mon. on", "naive": "naive app", "lean": "lean naive", "floor": "floor",
         "server-off": "this, mon. off"}


def scenario_record(scenario: Scenario, runs: dict[str, Any], local: InProcessResult) -> dict[str, Any]:
    """One scenario's figures on every server, the in-process timings, and the ratios between them."""
    record: dict[str, Any] = {"key": scenario.key, "model": scenario.model, "rows": scenario.rows,
                              "body_bytes": len(scenario.body), "runs": runs, "in_process": asdict(local)}
    record["ratios"] = targets.ratios(record) | {
        "validation_over_estimator": local.validation.median_ms / local.estimator.median_ms,
        "validation_over_backend": local.validation.median_ms / local.backend.median_ms,
        "writer_over_full_path": local.observe.median_ms / local.full_path.median_ms,
    }
    return record


def failures(records: list[dict[str, Any]], recycling: dict[str, Any]) -> list[str]:
    """One line per wrk run that saw a non-2xx answer or a socket error."""
    runs = [(f"{r['key']} on {name}", run) for r in records for name, run in r["runs"].items()]
    runs += [(f"{recycling['scenario']} on {name}", run) for name, run in recycling["runs"].items()]
    lines = []
    for where, s in runs:
        if not s["failed"]:
            continue
        errors = ", ".join(f"{k} {v}" for k, v in s["socket_errors"].items() if v)
        lines.append(f"{where}: {s['non2xx']} non-2xx of {s['requests']} responses"
                     + (f" (first status {s['first_bad_status']})" if s["non2xx"] else "")
                     + (f", socket errors: {errors}" if errors else ""))
    return lines


def validation_shares(records: list[dict[str, Any]]) -> dict[str, float]:
    """Validation time / the served backend's predict time for each model's largest batch."""
    biggest: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["rows"] >= biggest.get(r["model"], {"rows": 0})["rows"]:
            biggest[r["model"]] = r
    return {model: r["ratios"]["validation_over_backend"] for model, r in biggest.items()}


def build_results(machine: dict[str, Any], load: LoadSettings, scenarios: list[Scenario],
                  local: dict[str, InProcessResult], side_by_side: dict[str, Any],
                  recycling: dict[str, Any]) -> dict[str, Any]:
    """Everything one run produced, in the shape written to latest.json."""
    records = [scenario_record(s, side_by_side["runs"].get(s.key, {}), local[s.key]) for s in scenarios]
    shares = validation_shares(records)
    problems = side_by_side["problems"] + recycling["problems"] + failures(records, recycling)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load": asdict(load) | {"host": "127.0.0.1"},
        "variants": side_by_side["variants"],
        "backends": side_by_side["backends"],
        "worker_boots": side_by_side["worker_boots"],
        "memory_mib": side_by_side["memory_mib"],
        "scenarios": records,
        "recycling": recycling,
        "validation_share_of_predict": shares,
        "targets": targets.check({r["key"]: r for r in records}, recycling, side_by_side["memory_mib"], shares),
        "failures": problems,
        "ok": not problems,
    }


def add_phases(results: dict[str, Any], wire: dict[str, Any] | None,
               explained: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Add the protocol and explain phases (None when not run, as with --model); their problems fail the run."""
    problems = (wire or {}).get("problems", []) + failures_of((wire or {}).get("protocols", {}) | (wire or {}).get("explain", {}))
    results = results | {"protocols": wire, "explain_in_process": explained,
                         "failures": results["failures"] + problems}
    results["ok"] = not results["failures"]
    return results


def log_cost_lines(results: dict[str, Any]) -> list[str]:
    """The prediction log's share of server CPU per request (``bench.log_cost``); target <= 10%."""
    rows = results.get("log_cost")
    if not rows:
        return []
    lines = ["prediction log cost (server CPU per request, one worker, log on vs PREDICTION_LOG_SAMPLE=0; target <= 10%)",
             f"{'rows':>8} {'log on us':>11} {'log off us':>11} {'overhead':>9} {'median round':>13} {'rounds q1..q3':>15}"]
    for row in rows:
        low, high = row.get("overhead_percent_rounds_quartiles") or (float("nan"), float("nan"))
        lines.append(f"{row['rows']:>8,} {row['cpu_us_per_request_log_on']:>11,} {row['cpu_us_per_request_log_off']:>11,}"
                     f" {row['overhead_percent']:>8.1f}% {row['overhead_percent_requests_median_round']:>12.1f}%"
                     f" {low:>6.1f}..{high:.1f}%")
    return lines


def failures_of(runs: dict[str, Any]) -> list[str]:
    return [f"{key}: {run['non2xx']} non-2xx of {run['requests']} responses" for key, run in runs.items() if run["failed"]]


def _rows(rows: int) -> str:
    return f"{rows:,} row{'s' if rows > 1 else ''}"


def _cell(value: float | None, spec: str, width: int) -> str:
    return ("-" if value is None else format(value, spec)).rjust(width)


def header_lines(results: dict[str, Any]) -> list[str]:
    m, load = results["machine"], results["load"]
    versions = "  ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        f"Prediction server benchmark  {results['created_at']}",
        f"machine : {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, {m['platform']}",
        f"          2 processes do {m['parallel_speedup_2_processes']:.2f}x the work of 1 (ideal 2.00); "
        f"load average before the run {m['load_average_before']}",
        f"software: Python {m['python']}  {versions}  {m['wrk']}",
        f"servers : gunicorn -c gunicorn.conf.py, {m['workers']} {m['worker_class']} workers each on 127.0.0.1, "
        "OMP/OPENBLAS/MKL_NUM_THREADS=1; run side by side, interleaved per scenario:",
        *(f"          {SHORT[name]:15} = {label}" for name, label in results["variants"].items()),
        "          worker boots " + ", ".join(f"{SHORT[n]} {b}" for n, b in results["worker_boots"].items())
        + f" (beyond {m['workers']}: max_requests recycling or crashes)",
        f"load    : wrk {load['seconds']} s per server and scenario, {load['threads']} thread, "
        f"{load['connections']} connections; CPU = utime+stime of the server's process tree from /proc",
        "backend : " + ", ".join(f"{model} {backend}" for model, backend in results["backends"].items()),
        "",
    ]


def comparison_lines(results: dict[str, Any]) -> list[str]:
    head = (f"{'model':14}  {'request':12}  {'server':15}  {'req/s':>8}  {'rows/s':>10}  {'p50 ms':>8}  "
            f"{'p99 ms':>8}  {'CPU us/req':>10}  {'CPU us/row':>10}  {'non-2xx':>7}")
    lines = [head, "-" * len(head)]
    for r in results["scenarios"]:
        for i, name in enumerate(results["variants"]):
            run = r["runs"].get(name)
            first = f"{r['model']:14}  {_rows(r['rows']):12}" if i == 0 else " " * 28
            if run is None:
                lines.append(f"{first}  {SHORT[name]:15}  not run")
                continue
            lines.append(f"{first}  {SHORT[name]:15}  {_cell(run['requests_per_second'], ',.1f', 8)}  "
                         f"{_cell(run['rows_per_second'], ',.0f', 10)}  {_cell(run['p50_ms'], ',.2f', 8)}  "
                         f"{_cell(run['p99_ms'], ',.2f', 8)}  {_cell(run['cpu_us_per_request'], ',.0f', 10)}  "
                         f"{_cell(run['cpu_us_per_row'], ',.2f', 10)}  "
                         f"{str(run['non2xx']) + ('!!' if run['failed'] else ''):>7}")
    return lines


def ratio_lines(results: dict[str, Any]) -> list[str]:
    head = (f"{'model':14}  {'request':12}  {'req/s vs lean':>13}  {'req/s vs naive':>14}  {'CPU/req vs naive':>16}  "
            f"{'CPU/req vs floor':>16}  {'monitoring cost':>15}  {'CPU on/off':>10}  {'p99/p50':>7}")
    lines = ["Ratios (this server with monitoring on, against ...)", head, "-" * len(head)]
    for r in results["scenarios"]:
        x = r["ratios"]
        lines.append(f"{r['model']:14}  {_rows(r['rows']):12}  {_cell(x.get('throughput_vs_lean'), '.2f', 12)}x  "
                     f"{_cell(x['throughput_vs_naive'], '.2f', 13)}x  "
                     f"{_cell(x['cpu_vs_naive'], '.2f', 15)}x  {_cell(x['cpu_vs_floor'], '.2f', 15)}x  "
                     f"{_cell(x['monitoring_throughput_cost'], '.1%', 15)}  {_cell(x['cpu_on_vs_off'], '.2f', 9)}x  "
                     f"{_cell(x['p99_over_p50'], '.1f', 6)}x")
    lines.append("monitoring cost = 1 - req/s(on) / req/s(off): the prediction log, request rows and data-quality "
                 "checks together (an upper bound on the log's own cost).")
    return lines


def in_process_lines(results: dict[str, Any]) -> list[str]:
    head = (f"{'model':14}  {'request':12}  {'est ms':>9}  {'backend':>9}  {'path ms':>9}  {'valid ms':>9}  "
            f"{'json ms':>8}  {'to_array':>8}  {'writer ms':>9}  {'log off':>8}")
    lines = ["In process, one thread (median ms)", head, "-" * len(head)]
    for r in results["scenarios"]:
        t = {k: v["median_ms"] for k, v in r["in_process"].items()}
        lines.append(f"{r['model']:14}  {_rows(r['rows']):12}  {t['estimator']:>9.3f}  {t['backend']:>9.3f}  "
                     f"{t['full_path']:>9.3f}  {t['validation']:>9.3f}  {t['json']:>8.3f}  {t['to_array']:>8.3f}  "
                     f"{t['observe']:>9.3f}  {t['observe_unlogged']:>8.3f}")
    lines.append("est = estimator.predict (joblib) on a DataFrame; backend = LoadedModel.predict on validated columns "
                 "(the served backend alone);")
    lines.append("path = service.serving.inference.predict (resolve, "
                 "validate, predict with the served backend, shape); valid = decode + validate_rows;")
    lines.append("json = orjson decode + encode; to_array = np.asarray(instances) (the floor under validation); "
                 "writer = Observer.write_batch for this one answer (log on / PREDICTION_LOG_SAMPLE=0).")
    return lines


def memory_lines(results: dict[str, Any]) -> list[str]:
    lines = ["Memory per worker after the load (MiB; PSS splits shared pages, USS = private, what one more worker adds)"]
    for name, workers in results["memory_mib"].items():
        cells = "   ".join(f"pid {w['pid']}: PSS {w['pss_mib']:.1f} USS {w['uss_mib']:.1f} RSS {w['rss_mib']:.1f}"
                           for w in workers)
        share = targets.extra_worker_share(workers)
        lines.append(f"  {SHORT[name]:15} {cells}" + ("" if share is None else f"   extra worker = {share:.0%} of PSS"))
    return lines + memory.lines(results.get("memory"))


def recycling_lines(results: dict[str, Any]) -> list[str]:
    rec = results["recycling"]
    labels = {v.name: v.label for v in RECYCLING}
    head = (f"{'recycling':52}  {'req/s':>8}  {'p50 ms':>8}  {'p99 ms':>8}  {'p99.9 ms':>8}  {'max ms':>8}  "
            f"{'p99/p50':>7}  {'boots':>5}  {'CPU us/req':>10}")
    lines = [f"Worker recycling ({rec['scenario']}, wrk {rec['connections']} connections, {rec['seconds']} s each, "
             "interleaved; set through GUNICORN_CMD_ARGS)", head, "-" * len(head)]
    for name, label in labels.items():
        run = rec["runs"].get(name)
        if run is None:
            lines.append(f"{label:52}  not run")
            continue
        lines.append(f"{label:52}  {run['requests_per_second']:>8,.1f}  {run['p50_ms']:>8.2f}  {run['p99_ms']:>8.2f}  "
                     f"{run['p999_ms']:>8.2f}  {run['max_ms']:>8.2f}  {run['p99_ms'] / run['p50_ms']:>6.1f}x  "
                     f"{run['worker_boots']:>5}  {_cell(run['cpu_us_per_request'], ',.0f', 10)}")
    return lines


def protocol_lines(results: dict[str, Any]) -> list[str]:
    wire = results.get("protocols")
    if not wire:
        return []
    head = (f"{'request':12}  {'protocol':13}  {'body KiB':>9}  {'req/s':>8}  {'p50 ms':>8}  {'CPU us/req':>10}  "
            f"{'CPU us/row':>10}")
    lines = [f"Protocols (this server, monitoring on, breast-cancer; wrk {wire['seconds']} s each, one after another)",
             head, "-" * len(head)]
    for run in wire["protocols"].values():
        lines.append(f"{_rows(run['rows']):12}  {run['protocol']:13}  {run['body_bytes'] / 1024:>9,.1f}  "
                     f"{_cell(run['requests_per_second'], ',.1f', 8)}  {_cell(run['p50_ms'], ',.2f', 8)}  "
                     f"{_cell(run['cpu_us_per_request'], ',.0f', 10)}  {_cell(run['cpu_us_per_row'], ',.2f', 10)}")
    lines.append("v1 rows = POST /v1/models/m:predict {instances}; v2 = POST /v2/models/m/infer, one [rows, 30] FP64 "
                 "tensor as JSON or as raw bytes after the header (Inference-Header-Content-Length);")
    lines.append("mlflow split = POST /invocations {dataframe_split} with DEFAULT_MODEL=breast-cancer. "
                 "CPU = the server's process tree.")
    return lines


def explain_lines(results: dict[str, Any]) -> list[str]:
    local, wire = results.get("explain_in_process"), (results.get("protocols") or {}).get("explain")
    if not local:
        return []
    head = (f"{'model':14}  {'request':10}  {'method':20}  {'predict us/row':>14}  {'explain us/row':>14}  "
            f"{'ratio':>7}")
    lines = ["Explain vs predict in process (one thread, median per row; predict = the served backend)",
             head, "-" * len(head)]
    for c in local:
        lines.append(f"{c['model']:14}  {_rows(c['rows']):10}  {c['method']:20}  {c['predict_ms_per_row'] * 1e3:>14,.1f}  "
                     f"{c['explain_ms_per_row'] * 1e3:>14,.1f}  {c['ratio']:>6.1f}x")
    if wire:
        head = f"{'model':14}  {'request':10}  {'route':8}  {'req/s':>8}  {'p50 ms':>8}  {'CPU us/req':>10}  {'CPU us/row':>10}"
        lines += ["", "Explain vs predict through the server (POST /v1/models/m:explain and :predict, monitoring on)",
                  head, "-" * len(head)]
        for run in wire.values():
            lines.append(f"{run['model']:14}  {_rows(run['rows']):10}  {run['protocol']:8}  "
                         f"{_cell(run['requests_per_second'], ',.1f', 8)}  {_cell(run['p50_ms'], ',.2f', 8)}  "
                         f"{_cell(run['cpu_us_per_request'], ',.0f', 10)}  {_cell(run['cpu_us_per_row'], ',.2f', 10)}")
    return lines


def target_lines(results: dict[str, Any]) -> list[str]:
    lines = ["Targets (issues 9 and 20)"]
    for t in results["targets"]:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"  {verdict:12}  {t['target']}: {t['shown']}")
    return lines


def format_table(results: dict[str, Any]) -> str:
    """The whole report as plain text: facts, the comparison, ratios, in process, memory, recycling, targets."""
    lines = header_lines(results) + comparison_lines(results) + [""] + ratio_lines(results) + [""]
    lines += in_process_lines(results) + [""]
    for extra in (protocol_lines(results), explain_lines(results), log_cost_lines(results)):
        lines += extra + ([""] if extra else [])
    lines += memory_lines(results) + [""] + recycling_lines(results) + [""]
    lines += target_lines(results) + [""]
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

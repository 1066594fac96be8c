import json
import time

import numpy as np
import pytest

from service.models import comparison, registry
from service.store import RequestRecord, ShadowRecord, Store

NOW = 1_700_000_000.0


def req(version, latency, *, role="production", status=200, rows=1, fallback_from=None, summary=None, ts=NOW - 10,
        model="m"):
    if summary is not None and not isinstance(summary, str):
        summary = json.dumps(summary)
    return RequestRecord(request_id=f"r{latency}-{version}-{role}", ts=ts, model=model, version=version, role=role,
                         status=status, latency_ms=float(latency), rows=rows, fallback_from=fallback_from,
                         error=None if status < 400 else "boom", summary=summary)


def as_rows(records):
    return [r.__dict__ for r in records]


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "artifacts"

    def change(state):
        state["labels"]["production"] = 1
        state["rollout"] = {"canary": {"version": 2, "weight": 10.0}, "shadow": [3]}
        return {"action": "test"}

    registry.update(root, "m", change, actor="test")
    return root


def test_latency_percentiles_match_numpy():
    latencies = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0, 97.0]
    figures = comparison.version_figures(as_rows(req(1, ms) for ms in latencies))[1]
    expected = np.percentile(latencies, [50, 95, 99])
    assert [figures["p50_ms"], figures["p95_ms"], figures["p99_ms"]] == pytest.approx(expected.tolist())
    assert figures["mean_ms"] == pytest.approx(np.mean(latencies))
    assert (figures["requests"], figures["errors"], figures["error_rate"]) == (13, 0, 0.0)


def test_errors_are_attributed_to_the_version_that_failed_over():
    records = [req(1, ms, rows=2, summary={"classes": {"0": 3, "1": 1}}) for ms in range(1, 11)]
    records += [req(2, ms, role="canary", summary={"classes": {"1": 1}}) for ms in (5, 15, 25, 35)]
    records += [req(2, 50, role="canary", status=500),
                req(1, 80, role="fallback", fallback_from=2, summary={"classes": {"0": 1, "1": 1}}),
                req(2, 1, role="canary", status=422), req(1, 2, status=400)]
    figures = comparison.version_figures(as_rows(records))

    canary, production = figures[2], figures[1]
    assert (canary["requests"], canary["errors"], canary["fallbacks_from"], canary["fallbacks_to"]) == (6, 2, 1, 0)
    assert canary["error_rate"] == pytest.approx(2 / 6)
    assert canary["client_errors"] == 1
    assert canary["roles"] == {"canary": 5}
    # users routed to the canary waited for the failed attempt and the rescue
    assert canary["p99_ms"] == pytest.approx(np.percentile([5, 15, 25, 35, 50, 80], 99))
    assert canary["predictions"] == {"task": "classification", "n": 4, "counts": {"1": 4}, "shares": {"1": 1.0}}

    assert (production["requests"], production["errors"], production["error_rate"]) == (11, 0, 0.0)
    assert (production["fallbacks_from"], production["fallbacks_to"], production["client_errors"]) == (0, 1, 1)
    assert production["roles"] == {"fallback": 1, "production": 10}
    assert production["rows"] == 21
    assert production["p99_ms"] == pytest.approx(np.percentile(range(1, 11), 99))
    predictions = production["predictions"]
    assert predictions["counts"] == {"0": 31, "1": 11}
    assert predictions["shares"] == pytest.approx({"0": 31 / 42, "1": 11 / 42})


def test_a_failed_fallback_is_an_error_for_both_versions():
    figures = comparison.version_figures(as_rows([req(1, 9, role="fallback", fallback_from=2, status=503)]))
    assert (figures[2]["errors"], figures[2]["requests"]) == (1, 1)
    assert (figures[1]["errors"], figures[1]["requests"]) == (1, 1)


def test_only_client_errors_leave_no_rate_and_no_nan():
    figures = comparison.version_figures(as_rows([req(1, 3, status=422)]))[1]
    assert figures["requests"] == 0 and figures["client_errors"] == 1
    assert figures["error_rate"] is None and figures["p99_ms"] is None and figures["mean_ms"] is None
    json.dumps(figures, allow_nan=False)


def test_regression_summaries_merge_into_mean_std_min_max():
    chunks = [np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0]), np.array([-4.0])]
    records = [req(1, i, summary={"n": len(c), "sum": c.sum(), "sumsq": (c ** 2).sum(), "min": c.min(), "max": c.max()})
               for i, c in enumerate(chunks)]
    records.append(req(1, 99, summary=None))
    records.append(req(1, 98, summary="not json"))
    records.append(req(1, 97, summary={"n": 1, "sum": None, "sumsq": None, "min": None, "max": None}))  # overflowed
    predictions = comparison.version_figures(as_rows(records))[1]["predictions"]
    values = np.concatenate(chunks)
    assert predictions["task"] == "regression" and predictions["n"] == values.size
    assert predictions["mean"] == pytest.approx(values.mean())
    assert predictions["std"] == pytest.approx(values.std())
    assert (predictions["min"], predictions["max"]) == (-4.0, 20.0)


def test_shadow_figures_are_row_weighted_and_merge_per_class():
    def shadow(live, shadow_version, rows, agreement=None, diff=None, error=None, per_class=None):
        detail = json.dumps({"per_class": per_class}) if per_class else None
        return ShadowRecord(NOW, "m", live, shadow_version, rows, agreement, diff, error, detail).__dict__

    rows = [
        shadow(2, 4, 10, 0.9, 0.05, per_class={"0": {"rows": 6, "agree": 6}, "1": {"rows": 4, "agree": 3}}),
        shadow(2, 4, 30, 0.5, 0.25, per_class={"0": {"rows": 10, "agree": 5}, "1": {"rows": 20, "agree": 10}}),
        shadow(2, 4, 5, error="ValueError: boom"),
        shadow(2, 5, 10, diff=0.1),
        shadow(2, 5, 30, diff=0.3),
    ]
    figures = comparison.shadow_figures(rows)
    assert list(figures) == ["2->4", "2->5"]
    classifier = figures["2->4"]
    assert (classifier["comparisons"], classifier["rows"], classifier["errors"]) == (3, 40, 1)
    assert classifier["agreement"] == pytest.approx((9 + 15) / 40)
    assert classifier["mean_abs_diff"] == pytest.approx((0.5 + 7.5) / 40)
    assert classifier["per_class"] == {"0": {"rows": 16, "agree": 11, "agreement": 11 / 16},
                                       "1": {"rows": 24, "agree": 13, "agreement": 13 / 24}}
    regressor = figures["2->5"]
    assert regressor["agreement"] is None and regressor["per_class"] == {}
    assert regressor["mean_abs_diff"] == pytest.approx(0.25)
    assert (regressor["live_version"], regressor["shadow_version"]) == (2, 5)


def test_compare_reads_one_window_of_the_store(tmp_path, root):
    store = Store(tmp_path / "db.sqlite")
    store.record_requests([
        req(1, 5, ts=NOW - 1000, status=500),  # before the window
        req(1, 7, ts=NOW - 100, summary={"classes": {"0": 2}}),
        req(1, 9, ts=NOW - 50, summary={"classes": {"1": 2}}),
        req(1, 1, ts=NOW - 50, model="other"),
    ])
    store.record_shadow([ShadowRecord(NOW - 20, "m", 1, 3, 4, 0.75, 0.1),
                         ShadowRecord(NOW - 2000, "m", 1, 3, 4, 0.0, 0.9)])

    result = comparison.compare(store, root, "m", 300, now=NOW)

    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert result["model"] == "m" and result["window_seconds"] == 300
    assert result["since"] == "2023-11-14T22:08:20Z"
    assert result["labels"] == {"production": 1}
    assert result["rollout"]["canary"] == {"version": 2, "weight": 10.0}
    assert list(result["versions"]) == ["1", "2", "3"]  # 2 and 3 are in play but saw no traffic
    assert (result["versions"]["1"]["requests"], result["versions"]["1"]["errors"]) == (2, 0)
    assert result["versions"]["1"]["predictions"]["shares"] == {"0": 0.5, "1": 0.5}
    assert result["versions"]["2"]["requests"] == 0
    assert result["shadow"]["1->3"]["comparisons"] == 1 and result["shadow"]["1->3"]["agreement"] == 0.75


def test_compare_works_on_a_registry_without_rollout(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    result = comparison.compare(store, tmp_path / "artifacts", "m", 60)
    assert (result["labels"], result["versions"], result["shadow"]) == ({}, {}, {})
    assert result["rollout"].get("canary") is None
    assert "no versions" in comparison.format_table(result)


def test_format_table_puts_versions_side_by_side(tmp_path, root):
    store = Store(tmp_path / "db.sqlite")
    store.record_requests([req(1, 10, summary={"classes": {"0": 3, "1": 1}}),
                           req(2, 30, role="canary", status=500),
                           req(2, 20, role="canary", summary={"classes": {"1": 2}})])
    store.record_shadow([ShadowRecord(NOW - 5, "m", 1, 3, 4, 0.75, 0.1)])
    text = comparison.format_table(comparison.compare(store, root, "m", 300, now=NOW))
    lines = text.splitlines()
    assert lines[0].startswith("m: last 300 s (since ")
    assert lines[1].split() == ["version", "v1", "v2", "v3"]
    assert "production" in lines[2] and "canary 10%" in lines[2] and "shadow" in lines[2]
    assert lines[3].split() == ["requests", "1", "2", "0"]
    assert next(ln for ln in lines if ln.startswith("error rate")).split() == ["error", "rate", "0.0%", "50.0%", "-"]
    assert next(ln for ln in lines if ln.startswith("class 0 share")).split()[3:] == ["75.0%", "0.0%", "-"]
    assert lines[-1] == "shadow 1->3: 1 comparisons, 4 rows, agreement 75.0%, mean |diff| 0.1, 0 errors"


def test_compare_defaults_now_to_the_clock(tmp_path, root):
    store = Store(tmp_path / "db.sqlite")
    store.record_requests([req(1, 3, ts=time.time() - 1)])
    assert comparison.compare(store, root, "m", 60)["versions"]["1"]["requests"] == 1

"""The report as text, and the lineage section of the model card."""

from __future__ import annotations

from service.monitoring.card_text import _lineage
from service.retrain.report import outcome, text


def report(**comparison) -> dict:
    return {"model": "m", "champion": 1, "challenger": None, "packaged": False, "rollout": None,
            "window": {"since": 0.0, "until": 100.0, "holdout_from": None},
            "rows": {"base": {"read": 10, "kept": 9, "left_out": {"invalid_row": 1}, "capped": False},
                     "production": {"scanned": 5, "labelled": 3, "left_out": {"inputs_not_stored": 2},
                                    "unstored_features": ["email"], "capped": True, "learned_from": 2, "holdout": 1},
                     "fitted_on": 11},
            "comparison": {"metric": "accuracy", "holdout_rows": 1, "champion": {}, "challenger": {}, "gain": {},
                           "gates": [{"name": "data", "passed": False, "reason": "only 1 labelled hold-out rows"}],
                           "passed": False, "decided_by": "data", "reason": "only 1 labelled hold-out rows",
                           **comparison}}


def test_a_run_the_data_gate_stopped_says_so_without_a_table():
    shown = text(report())
    assert "metric " not in shown and "FAIL  data" in shown
    assert "base data: 9 of 10 rows; left out: 1 invalid row" in shown
    assert "production: 3 labelled of 5 logged rows; left out: 2 inputs not stored (row cap reached)" in shown
    assert "inputs not stored by the log (pii): email" in shown
    assert "verdict: FAILED (decided by the data gate: only 1 labelled hold-out rows)" in shown
    assert outcome(report()) == "m: challenger not packaged: data gate: only 1 labelled hold-out rows"


def test_the_card_shows_where_a_retrained_version_came_from():
    figures = {"accuracy": {"value": 0.9, "low": 0.8, "high": 0.95}}
    lines = _lineage({"parent_version": 3, "kept_failed": False,
                      "base_data": {"source": "base.csv", "rows": 10, "sha256": "ab" * 32},
                      "production_rows": {"rows": 5, "sha256": "cd" * 32, "ids_sha256": "ef" * 32},
                      "holdout_rows": {"rows": 2, "sha256": "01" * 32}, "window": {"since": 1.0, "until": 2.0},
                      "comparison": {"passed": True, "decided_by": "gain", "reason": "better", "metric": "accuracy",
                                     "champion": {"accuracy": {"value": 0.7, "low": 0.6, "high": 0.8}},
                                     "challenger": figures, "gain": {"value": 0.2, "low": 0.1, "high": 0.3}}})
    shown = "\n".join(lines)
    assert "## Retrained from production feedback" in shown and "**Retrained from version** 3" in shown
    assert "| accuracy | 0.7 | 0.9 | [0.8, 0.95] |" in shown and "Gain on accuracy: +0.2 [+0.1, +0.3]" in shown
    assert _lineage(None) == []

"""The monitoring page's pure half: view models and SVG charts from report dicts."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
from markupsafe import Markup

from service.monitoring import page
from service.monitoring.alerts import AlertManager, evaluate, load_rules

SVG = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert(1)</script>"
START = 1795750000
#: 2026-11-24 10:12:00 UTC, as the alert store keeps it: unix seconds.
FIRED = datetime(2026, 11, 24, 10, 12, tzinfo=UTC).timestamp()
DRIFT_THRESHOLDS = {"psi_warn": 0.1, "psi_alert": 0.25, "ks_material": 0.1, "alpha": 0.01, "min_samples": 100,
                    "min_expected": 5.0, "tests": 5, "p_value": 0.002}
QUALITY_THRESHOLDS = {"missing_warn": 0.05, "missing_alert": 0.2, "out_of_range_warn": 0.05, "out_of_range_alert": 0.2,
                      "unseen_warn": 0.05, "unseen_alert": 0.2, "min_samples": 100}


def _numeric(psi: float, status: str, shift: int = 0) -> dict:
    ref = [0.02, 0.05, 0.1, 0.15, 0.18, 0.18, 0.15, 0.1, 0.05, 0.02]
    cur = ref[-shift:] + ref[:-shift] if shift else list(ref)
    return {"status": status, "kind": "numeric", "psi": psi, "ks_pvalue": 0.4 if status == "ok" else 0.001, "n": 500,
            "reference": {"edges": [6.9 + 2.2 * i for i in range(11)], "frequencies": ref},
            "current": {"frequencies": cur}}


def full_report() -> dict:
    """A report with every section, two versions (one without traffic) and alerts."""
    timeline = [{"start": START + 60 * i, "end": START + 60 * (i + 1), "requests": 8 + (i * 7) % 11,
                 "errors": 1 if i in (4, 9) else 0, "p50_ms": 2.8 + (i % 4) * 0.3} for i in range(15)]
    return {
        "model": "breast-cancer",
        "window": {"last_n": 500, "since": "2026-11-24T10:00:00Z", "until": "2026-11-24T10:15:00Z"},
        "labels": {"production": 1, "canary": 2},
        "rollout": {"canary": {"version": 2, "weight": 10}, "shadow": [], "fallback": None},
        "versions": {
            "1": {
                "n": 500,
                "traffic": {"requests": 152, "errors": 2, "error_rate": 0.0132, "p50_ms": 3.1, "p99_ms": 12.5,
                            "fallback_rate": 0.0, "timeline": timeline},
                "drift": {"status": "alert", "n": 500, "thresholds": DRIFT_THRESHOLDS, "features": {
                    "mean radius": _numeric(0.41, "alert", shift=2),
                    "mean texture": _numeric(0.12, "warn", shift=1),
                    EVIL: _numeric(0.03, "ok"),
                    "worst area": _numeric(0.01, "ok"),
                }, "prediction": {"status": "ok", "kind": "categorical", "psi": 0.01,
                                  "reference": {"categories": ["0", "1"], "frequencies": [0.37, 0.63]},
                                  "current": {"frequencies": [0.4, 0.6]}}},
                "quality": {"status": "warn", "thresholds": QUALITY_THRESHOLDS, "features": {
                    "mean radius": {"missing_rate": 0.0, "out_of_range_rate": 0.06, "unseen_rate": None, "status": "warn",
                                    "missing_status": "ok", "out_of_range_status": "warn"},
                    "worst area": {"missing_rate": 0.0, "out_of_range_rate": 0.0, "unseen_rate": None, "status": "ok"},
                    EVIL: {"missing_rate": 0.02, "out_of_range_rate": 0.0, "unseen_rate": None, "status": "ok"}}},
                "performance": {"status": "ok", "labelled": 80, "metrics": {"accuracy": 0.95, "f1": 0.96},
                                "reference": {"accuracy": 0.98, "f1": 0.97}, "delta": {"accuracy": -0.03, "f1": -0.01},
                                "timeline": [{"start": START + 300 * i, "end": START + 300 * (i + 1), "n": 10,
                                              "value": v} for i, v in enumerate([0.97, 0.96, None, 0.93, 0.94])]},
                "bias": {"status": "warn", "features": {"sex": {
                    "status": "warn", "demographic_parity_difference": 0.12, "equal_opportunity_difference": 0.04,
                    "groups": {"female": {"n": 240, "positive_rate": 0.58, "accuracy": 0.95},
                               "male": {"n": 260, "positive_rate": 0.70, "accuracy": 0.94}}}}},
            },
            "2": {"n": 0, "performance": {"status": "insufficient", "labelled": 3, "metrics": {},
                                          "reference": {"accuracy": 0.98}}},
        },
        "alerts": [  # as AlertManager.active() gives them: the rule's status levels, unix seconds
            {"model": "breast-cancer", "version": 1, "rule": "data_drift", "state": "firing", "since": FIRED,
             "description": "Input features drifted from the training reference", "metric": "drift.status", "op": "==",
             "value": "alert", "threshold": "alert", "updated_at": FIRED + 150, "last_notified_at": FIRED},
            {"model": "breast-cancer", "version": 1, "rule": "data_quality", "state": "pending", "since": FIRED + 120,
             "description": "Input data quality degraded", "metric": "quality.status", "op": "==",
             "value": "warn", "threshold": "warn", "updated_at": FIRED + 150, "last_notified_at": None},
            {"model": "breast-cancer", "version": 1, "rule": "error_rate", "state": "ok", "since": FIRED,
             "metric": "traffic.error_rate", "op": ">", "value": 0.01, "threshold": 0.05},
        ],
    }


def empty_report(name: str = "diabetes") -> dict:
    """A model that has been packaged but has seen nothing yet."""
    return {"model": name, "window": {"last_n": 500}, "labels": {"production": 1}, "versions": {"1": {"n": 0}},
            "alerts": []}


def parse(svg: Markup) -> ET.Element:
    assert isinstance(svg, Markup)
    root = ET.fromstring(str(svg))
    assert root.tag == SVG + "svg"
    assert root.get("role") == "img" and root.get("aria-label")
    assert root.find(SVG + "title") is not None
    return root


def charts(view: dict) -> list[Markup]:
    """Every SVG string anywhere in a view model."""
    found = []
    if isinstance(view, Markup):
        return [view]
    if isinstance(view, dict):
        for value in view.values():
            found += charts(value)
    elif isinstance(view, list | tuple):
        for value in view:
            found += charts(value)
    return found


def test_model_view_of_a_full_report():
    view = page.model_view(full_report())
    assert view["model"] == "breast-cancer"
    assert view["status"] == "alert"
    assert [v["version"] for v in view["versions"]] == ["1", "2"]  # production first
    assert view["labels"] == [("canary", 2), ("production", 1)]
    assert view["rollout"] == "canary v2 at 10%"
    assert [a["state"] for a in view["alerts"]] == ["firing", "pending"]  # "ok" is not active
    v1, v2 = view["versions"]
    assert v2["performance"]["metric"] == "accuracy" and v2["performance"]["chart"] is None
    assert v1["labels"] == ["production"]
    assert v1["traffic"]["error_rate"] == "1.32%" and v1["traffic"]["p99"] == "12.5 ms"
    assert [r["name"] for r in v1["drift"]["rows"]] == ["mean radius", "mean texture", EVIL, "worst area"]
    assert v1["drift"]["rows"][0]["test"] == "KS"
    assert v1["drift"]["prediction"]["status"] == "ok"
    assert [r["name"] for r in v1["quality"]["problems"]] == ["mean radius", EVIL]
    assert v1["performance"]["rows"][0] == {"name": "accuracy", "live": "0.95", "reference": "0.98", "delta": "-0.03"}
    sex = v1["bias"]["features"][0]
    assert ("demographic parity difference", "0.12") in sex["gaps"]
    assert sex["columns"] == ["n", "positive rate", "accuracy"]
    assert sex["groups"][0] == ("female", ["240", "0.58", "0.95"])


def test_every_chart_is_well_formed_svg():
    svgs = charts(page.model_view(full_report()))
    assert len(svgs) == 3 + 5  # requests, latency, accuracy; 4 features + prediction
    for svg in svgs:
        parse(svg)


def test_traffic_chart_draws_a_bar_per_bucket_and_the_errors():
    timeline = full_report()["versions"]["1"]["traffic"]["timeline"]
    root = parse(page.traffic_chart(timeline))
    bars = [r for r in root.iter(SVG + "rect") if "bar" in (r.get("class") or "")]
    assert len([b for b in bars if "error" not in b.get("class")]) == 15
    assert len([b for b in bars if "error" in b.get("class")]) == 2
    tips = [t.text for t in root.iter(SVG + "title")]
    assert any("1 errors" in t for t in tips)


def test_line_chart_leaves_a_gap_for_missing_values_and_draws_the_reference():
    root = parse(page.line_chart([(START, 0.9), (START + 60, None), (START + 120, 0.8), (START + 180, 0.85)],
                                 label="Live accuracy over time", unit="", reference=0.95, bounds=(0, 1)))
    assert len(list(root.iter(SVG + "circle"))) == 3
    assert len(list(root.iter(SVG + "polyline"))) == 1  # the lone first point has no segment
    assert len([line for line in root.iter(SVG + "line") if line.get("class") == "reference"]) == 1


def test_latency_axis_starts_at_zero():
    root = parse(page.line_chart([(START, 3.0), (START + 60, 4.0)], label="latency", unit="ms", fmt=page.fmt_ms,
                                 zero_based=True))
    assert "0.0 ms" in [t.text for t in root.iter(SVG + "text")]


def test_line_chart_of_a_flat_or_single_series():
    parse(page.line_chart([(START, 3.0)], label="latency", unit="ms"))
    parse(page.line_chart([(START, 0.0), (START + 60, 0.0)], label="flat", unit=""))


def test_distribution_chart_pairs_reference_and_current():
    root = parse(page.distribution_chart([0.4, 0.6], [0.5, None], ["0", "1"], label="prediction"))
    assert len([r for r in root.iter(SVG + "rect") if "reference" in r.get("class", "")]) == 2
    assert len([r for r in root.iter(SVG + "rect") if "current" in r.get("class", "")]) == 2
    assert "1: reference 60.0%, current —" in [t.text for t in root.iter(SVG + "title")]


def test_empty_inputs_draw_no_chart():
    assert page.traffic_chart([]) is None
    assert page.line_chart([(START, None)], label="x", unit="") is None
    assert page.distribution_chart([], [], [], label="x") is None


def test_a_model_that_has_seen_nothing():
    view = page.model_view(empty_report())
    assert view["alerts"] == []
    (v1,) = view["versions"]
    assert v1["labels"] == ["production"]
    assert v1["traffic"] is v1["drift"] is v1["quality"] is v1["performance"] is v1["bias"] is None
    assert v1["status"] == "unknown" and v1["badge"]["text"] == "– no data"


@pytest.mark.parametrize("report", [
    {}, {"model": "m"}, {"model": "m", "versions": None, "alerts": None, "labels": None, "window": None},
    {"model": "m", "versions": {"1": None, "2": {"traffic": {"requests": 0}}, "x": {"drift": "broken"}}},
    {"model": "m", "versions": {"1": {"traffic": {"requests": 5, "timeline": [{"start": None}, "junk"]},
                                      "drift": {"status": "weird", "features": {"f": {"psi": float("nan")}}},
                                      "performance": {"metrics": {"mae": 12.0}, "timeline": [{"value": 40.0}]}}},
                                "alerts": [None, {"state": "firing"}, "junk"]},
])
def test_missing_and_malformed_sections_never_raise(report):
    view = page.model_view(report)
    for svg in charts(view):
        parse(svg)
    page.overview_view([report])


def test_feature_names_are_escaped_in_svg():
    report = full_report()
    svgs = charts(page.model_view(report))
    assert not any(EVIL in svg for svg in svgs)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in svg for svg in svgs)
    evil_chart = next(svg for svg in svgs if "&lt;script&gt;" in svg)
    assert parse(evil_chart).get("aria-label").startswith(EVIL)  # the parser gives the text back


def test_overview_view_summarises_each_model():
    cards = page.overview_view([full_report(), empty_report()])
    assert [c["model"] for c in cards] == ["breast-cancer", "diabetes"]
    bc, diabetes = cards
    assert bc["status"] == "alert" and len(bc["alerts"]) == 2
    assert bc["versions"][0]["traffic"]["requests"] == "152"
    assert diabetes["status"] == "unknown" and diabetes["versions"][0]["traffic"] is None


def test_worst_status_and_formatting():
    assert page.worst(["ok", "warn", "insufficient"]) == "warn"
    assert page.worst([]) == "unknown"
    assert page.worst(["nonsense"]) == "unknown"
    assert page.fmt_pct(0.0132, 2) == "1.32%" and page.fmt_pct(None) == "—"
    assert page.fmt_num(1234) == "1,234" and page.fmt_num(0.1234) == "0.123" and page.fmt_num(True) == "—"
    assert page.fmt_num(0.00012) == "0.00012"
    assert page.fmt_ms(float("inf")) == "—"


def test_view_model_does_not_change_the_report():
    report = full_report()
    before = copy.deepcopy(report)
    page.model_view(report)
    assert report == before


def test_bias_p_values_are_shown_as_evidence_not_as_gaps():
    view = page.bias_view({"status": "warn", "features": {"group": {
        "status": "warn", "demographic_parity_difference": 0.15, "parity_pvalue": 0.0001, "groups": {}}}})
    feature = view["features"][0]
    assert feature["gaps"] == [("demographic parity difference", "0.15")]
    assert feature["evidence"] == [("parity pvalue", "0.0001")]


# -- alert rows: what was measured, since when ---------------------------------------------------


def test_a_drift_alert_names_the_features_their_figures_and_the_thresholds():
    firing, pending = page.model_view(full_report())["alerts"]
    assert firing["rule"] == "data_drift" and firing["description"].startswith("Input features drifted")
    assert firing["findings"] == [
        {"feature": "mean radius", "status": "alert", "value": "PSI 0.41, p 0.001 (KS)",
         "threshold": "p < 0.002 and (PSI ≥ 0.1 or KS D ≥ 0.1)"},
        {"feature": "mean texture", "status": "warn", "value": "PSI 0.12, p 0.001 (KS)", "threshold": "p < 0.002"},
    ]
    assert firing["feature"] == "mean radius, mean texture" and firing["more"] == 0
    assert pending["findings"] == [{"feature": "mean radius", "status": "warn", "value": "out of range 6.0%",
                                    "threshold": "≥ 5.0%"}]


def test_alert_since_is_a_readable_utc_time_with_a_machine_readable_twin():
    firing, pending = page.model_view(full_report())["alerts"]
    assert firing["since"] == {"text": "2026-11-24 10:12 UTC", "datetime": "2026-11-24T10:12:00Z", "ago": "3 min"}
    assert pending["since"]["text"] == "2026-11-24 10:14 UTC" and pending["since"]["ago"] == "1 min"
    assert not re.search(r"\b1\d{9}\b", repr(page.model_view(full_report())["alerts"]))  # no raw epoch left


def test_the_window_reads_as_utc_times():
    assert page.model_view(full_report())["window"] == (
        "last 500 predictions, since 2026-11-24 10:00 UTC, until 2026-11-24 10:15 UTC")
    assert page.window_text({"last_n": 20, "until": "not a time"}) == "last 20 predictions, until not a time"


@pytest.mark.parametrize(("value", "now", "expected"), [
    (FIRED, None, {"text": "2026-11-24 10:12 UTC", "datetime": "2026-11-24T10:12:00Z", "ago": ""}),
    ("2026-11-24T10:12:07Z", FIRED + 4000, {"text": "2026-11-24 10:12 UTC", "datetime": "2026-11-24T10:12:07Z",
                                            "ago": "1 h 6 min"}),
    ("2026-11-24T10:12:07", None, {"text": "2026-11-24 10:12 UTC", "datetime": "2026-11-24T10:12:07Z", "ago": ""}),
    (FIRED, FIRED - 5, {"text": "2026-11-24 10:12 UTC", "datetime": "2026-11-24T10:12:00Z", "ago": ""}),  # clock skew
    (FIRED + 0.4, "2026-11-24T10:12:00Z", {"text": "2026-11-24 10:12 UTC", "datetime": "2026-11-24T10:12:00Z",
                                           "ago": "0 s"}),  # the report's time is rounded down
    (None, None, None), ("yesterday", None, None), (float("nan"), None, None), (True, None, None), (1e300, None, None),
])
def test_time_view(value, now, expected):
    assert page.time_view(value, now) == expected


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (59.9, "59 s"), (60, "1 min"), (3600, "1 h"), (3660, "1 h 1 min"), (86400, "1 d"),
    (90000, "1 d 1 h"), (-1, "—"), (None, "—"),
])
def test_durations(seconds, text):
    assert page.fmt_duration(seconds) == text


def _alert(**fields):
    return {"model": "m", "version": 1, "state": "warn", "since": FIRED, **fields}


def test_a_rule_on_one_feature_names_it_with_the_operator():
    (row,) = page.alerts_view([_alert(rule="radius_psi", metric="drift.features.mean radius.psi", op=">",
                                      value=0.41, threshold=0.3)])
    assert row["findings"] == [{"feature": "mean radius", "value": "0.41", "threshold": "> 0.3"}]


def test_a_numeric_rule_without_a_feature_shows_value_and_threshold():
    (row,) = page.alerts_view([_alert(rule="error_rate", metric="traffic.error_rate", op=">=", value=0.07,
                                      threshold=0.05)])
    assert row["findings"] == [{"feature": "—", "value": "0.07", "threshold": "≥ 0.05"}]
    assert row["feature"] == ""


def test_a_status_alert_whose_report_no_longer_shows_drift_falls_back_to_its_record():
    calm = {"1": {"drift": {"status": "ok", "features": {"f": {"status": "ok", "psi": 0.01}}}}}
    (row,) = page.alerts_view([_alert(rule="data_drift", metric="drift.status", op="==", value="alert",
                                      threshold="alert")], calm)
    assert row["findings"] == [{"feature": "—", "value": "alert", "threshold": "= alert"}]


def test_an_alert_lists_five_features_and_counts_the_rest():
    features = {f"f{i}": {"status": "alert", "kind": "categorical", "psi": 0.3 + i / 100} for i in range(8)}
    drift = {"status": "alert", "thresholds": DRIFT_THRESHOLDS, "features": features}
    (row,) = page.alerts_view([_alert(state="firing", rule="data_drift", metric="drift.status")], {"1": {"drift": drift}})
    assert [f["feature"] for f in row["findings"]] == ["f0", "f1", "f2", "f3", "f4"]
    assert row["more"] == 3
    assert row["findings"][0]["threshold"] == "PSI ≥ 0.25"  # no test could run: PSI alone decides


def test_prediction_drift_names_the_prediction_and_a_chi_square_test():
    drift = {"thresholds": DRIFT_THRESHOLDS, "features": {"f": {"status": "alert", "psi": 0.5}},
             "prediction": {"status": "warn", "kind": "categorical", "psi": 0.04, "chi2_pvalue": 0.0001}}
    (row,) = page.alerts_view([_alert(rule="prediction_drift", metric="drift.prediction.status")], {"1": {"drift": drift}})
    assert row["findings"] == [{"feature": "prediction", "status": "warn", "value": "PSI 0.04, p 0.0001 (χ²)",
                                "threshold": "p < 0.002"}]


def test_alerts_from_the_real_alert_manager_carry_what_the_page_needs(tmp_path):
    manager = AlertManager(tmp_path / "alerts.db", load_rules(None))
    section = full_report()["versions"]["1"]
    manager.apply("breast-cancer", 1, evaluate(manager.rules.values(), "breast-cancer", 1, section), now=FIRED)
    active = manager.active("breast-cancer")
    drift = next(a for a in active if a["rule"] == "data_drift")
    assert (drift["state"], drift["metric"], drift["op"], drift["since"]) == ("firing", "drift.status", "==", FIRED)
    row = next(r for r in page.alerts_view(active, {"1": section}) if r["rule"] == "data_drift")
    assert row["feature"] == "mean radius, mean texture"
    assert row["since"]["datetime"] == "2026-11-24T10:12:00Z"


def test_the_alerts_table_renders_a_time_element_and_one_row_per_finding():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    templates = Path(page.__file__).resolve().parents[1] / "api" / "templates"
    env = Environment(loader=FileSystemLoader(templates), autoescape=select_autoescape(["html"]))
    macros = env.get_template("monitoring/_macros.html").module
    html = str(macros.alerts_table(page.model_view(full_report())["alerts"]))
    assert '<time datetime="2026-11-24T10:12:00Z">2026-11-24 10:12 UTC</time>' in html
    assert html.count("<tbody>") == 2 and html.count('rowspan="2"') == 4 and html.count("<tr>") == 1 + 3
    assert "mean texture" in html and "p &lt; 0.002" in html
    assert str(FIRED) not in html and str(int(FIRED)) not in html

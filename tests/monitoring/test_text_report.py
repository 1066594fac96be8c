"""The terminal report words alerts as the monitoring page does: UTC time, how long ago, value and threshold."""

from __future__ import annotations

from service.monitoring.text_report import format_report
from tests.monitoring.test_page import FIRED, full_report


def alert_lines(report: dict) -> list[str]:
    lines = format_report(report).splitlines()
    start = next(i for i, line in enumerate(lines) if "ALERT" in line)
    return lines[start:lines.index("", start)]


def test_a_status_alert_names_each_finding_with_its_figures_and_since_when():
    assert alert_lines(full_report()) == [
        "  ALERT firing   v1 data_drift: mean radius PSI 0.41, p 0.001 (KS) (threshold p < 0.002 and "
        "(PSI ≥ 0.1 or KS D ≥ 0.1)) since 2026-11-24 10:12 UTC (3 min ago)",
        "        mean texture PSI 0.12, p 0.001 (KS) (threshold p < 0.002)",
        "  ALERT pending  v1 data_quality: mean radius out of range 6.0% (threshold ≥ 5.0%) "
        "since 2026-11-24 10:14 UTC (1 min ago)",
    ]


def test_a_numeric_alert_shows_its_value_and_the_rule_threshold_not_an_epoch():
    report = full_report()
    report["alerts"] = [{"model": "breast-cancer", "version": 1, "state": "firing", "since": FIRED + 0.88,
                         "rule": "error_rate", "metric": "traffic.error_rate", "op": ">=", "value": 0.07,
                         "threshold": 0.05}]
    report["window"]["until"] = "2026-11-24T12:00:00Z"
    assert alert_lines(report) == [
        "  ALERT firing   v1 error_rate: 0.07 (threshold ≥ 0.05) since 2026-11-24 10:12 UTC (1 h 47 min ago)"]
    assert str(FIRED)[:6] not in format_report(report)

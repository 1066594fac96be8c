"""The backup alerts, fed to promtool's rule tester: a stale backup, and none at all where one is expected."""

from __future__ import annotations

from tests.monitoring.test_metrics import assert_rule_tests_pass

NEVER = "SklearnServerBackupNeverSucceeded"
STALE = "SklearnServerBackupStale"


def test_a_deployment_expecting_backups_is_told_after_36_hours_without_one(tmp_path):
    """Job a expects backups and has none: pending until 36 h, then firing. Job b expects them and
    has one: never. Job c takes none and did not opt in (0, or no gauge at all for d): never."""
    assert_rule_tests_pass(tmp_path, """
        rule_files: [alerts.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'sklearn_server_backups_expected{job="a", instance="a1"}'
                values: '1x2400'
              - series: 'sklearn_server_backups_expected{job="b", instance="b1"}'
                values: '1x2400'
              - series: 'sklearn_server_maintenance_last_run_timestamp_seconds{job="b", instance="b1", task="backup"}'
                values: '0+60x2400'
              - series: 'sklearn_server_backups_expected{job="c", instance="c1"}'
                values: '0x2400'
              - series: 'sklearn_server_maintenance_last_run_timestamp_seconds{job="d", instance="d1", task="retention"}'
                values: '0+60x2400'
            alert_rule_test:
              - eval_time: 35h
                alertname: SklearnServerBackupNeverSucceeded
                exp_alerts: []
              - eval_time: 37h
                alertname: SklearnServerBackupNeverSucceeded
                exp_alerts:
                  - exp_labels: {severity: warning, job: a}
              - eval_time: 37h
                alertname: SklearnServerBackupStale
                exp_alerts: []
    """)


def test_the_first_backup_ends_the_alert_and_an_old_one_is_stale_instead(tmp_path):
    """Job a's first backup lands at 38 h: the never-alert stops; that backup, never repeated, is
    stale 36 h 15 m later, and only then."""
    assert_rule_tests_pass(tmp_path, """
        rule_files: [alerts.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'sklearn_server_backups_expected{job="a", instance="a1"}'
                values: '1x4800'
              - series: 'sklearn_server_maintenance_last_run_timestamp_seconds{job="a", instance="a1", task="backup"}'
                values: '_x2280 136800x2400'
            alert_rule_test:
              - eval_time: 37h
                alertname: SklearnServerBackupNeverSucceeded
                exp_alerts:
                  - exp_labels: {severity: warning, job: a}
              - eval_time: 39h
                alertname: SklearnServerBackupNeverSucceeded
                exp_alerts: []
              - eval_time: 74h
                alertname: SklearnServerBackupStale
                exp_alerts: []
              - eval_time: 75h
                alertname: SklearnServerBackupStale
                exp_alerts:
                  - exp_labels: {severity: warning, job: a}
    """)


def test_the_server_says_whether_backups_are_expected_beside_the_last_one(make_app, monkeypatch):
    from service.backup import take
    from service.monitoring import metrics

    monkeypatch.setattr(metrics, "_current", None)  # this process's gauges, fresh: another test set one

    def published(app) -> list[str]:
        app.extensions["retention"].run_once()
        text = app.test_client().get("/metrics").get_data(as_text=True)
        return [line for line in text.splitlines() if line.startswith(("sklearn_server_backups_expected",
                                                                       "sklearn_server_maintenance_last_run"))]

    assert "sklearn_server_backups_expected 0.0" in published(make_app(retention_seconds=3600))
    expecting = make_app(retention_seconds=3600, backups_expected=True)
    lines = published(expecting)
    assert "sklearn_server_backups_expected 1.0" in lines
    assert not [line for line in lines if 'task="backup"' in line]  # none yet: the alert's case
    take.mark_done(expecting.extensions["store"], 1234.5)
    lines = published(expecting)
    assert 'sklearn_server_maintenance_last_run_timestamp_seconds{task="backup"} 1234.5' in lines
    assert "sklearn_server_backups_expected 1.0" in lines

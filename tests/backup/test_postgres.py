"""``backup`` and ``restore`` with PostgreSQL: a SQLite backup restored into PostgreSQL through the
store, and a PostgreSQL deployment backed up with the real pg_dump and restored with pg_restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer

from service.backup import pinned
from service.monitoring import alerts
from service.store import Store
from tests.backup.test_backup import MODEL, cli_env, invoke

pytestmark = pytest.mark.postgres
TABLES = ("prediction_batches", "feedback", "audit", "requests", "alerts")


def fill(app, client) -> None:
    """Predictions, feedback and one alert row of each kind of value ({any}: a number and a string)."""
    answer = client.post(f"/v1/models/{MODEL}:predict", json={"instances": load_breast_cancer().data[:20].tolist()})
    app.extensions["observer"].flush()
    labels = [{"id": i, "label": 1} for i in answer.json["ids"][:5]]
    assert client.post(f"/v1/models/{MODEL}/feedback", json={"feedback": labels}).json["accepted"] == 5
    store = app.extensions["store"]
    store.create_tables(alerts.SCHEMA)
    insert = store.insert_sql("alerts", alerts.ALERT_COLUMNS)
    with store.transaction() as db:
        db.execute(insert, (MODEL, 1, "drift", "firing", 10.0, store.pack(0.42), store.pack(0.25), 11.0, None, None))
        db.execute(insert, (MODEL, 1, "status", "warn", 12.0, store.pack("warn"), store.pack("alert"), 13.0, 12.5, None))
    app.extensions["observer"].flush()


def snapshot(url: str) -> dict:
    store = Store.from_url(url)
    try:
        rows = {t: store.fetch(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}
        states = [(*row[:5], store.unpack(row[5]), store.unpack(row[6]), *row[7:])
                  for row in store.fetch(f"SELECT {', '.join(alerts.ALERT_COLUMNS)} FROM alerts ORDER BY rule")]
        assert len(states) == 2 and states[0][5] == 0.42 and states[1][5] == "warn"
        batches = store.fetch("SELECT batch, base, rows, outputs FROM prediction_batches ORDER BY batch")
        feedback = store.fetch("SELECT id, label FROM feedback ORDER BY id")
        return {"rows": rows, "alerts": states, "batches": batches, "feedback": feedback}
    finally:
        store.close()


def check_restored(target: dict, source_url: str) -> None:
    assert snapshot(target["DATABASE_URL"]) == snapshot(source_url)
    for command in (["audit", "verify"], ["registry", "check"]):
        result = invoke(target, *command)
        assert result.exit_code == 0, result.output


def test_a_sqlite_backup_restores_into_postgresql_with_equal_rows_alerts_and_chain(make_app, tmp_path, postgres_url):
    app = make_app()
    fill(app, app.test_client())
    config = app.config["SERVICE_CONFIG"]
    folder = Path(invoke(cli_env(config.artifacts_dir, config.database_url), "backup", str(tmp_path / "b")).stdout.strip())
    target = cli_env(tmp_path / "new", postgres_url)
    done = invoke(target, "restore", str(folder))
    assert done.exit_code == 0, done.output
    check_restored(target, config.database_url)
    store = Store.from_url(postgres_url)  # the next batch the server writes takes a number after the restored ones
    with store.transaction() as db:
        db.execute("INSERT INTO prediction_batches (ts, model, version, rows, features, inputs, outputs) "
                   "VALUES (1, 'm', 1, 0, '[]', '[]', '[]')")
    assert store.fetch("SELECT max(batch) FROM prediction_batches")[0][0] == len(snapshot(config.database_url)["batches"]) + 1
    store.close()


def test_a_postgresql_deployment_is_backed_up_with_pg_dump_and_restored_with_pg_restore(make_app, tmp_path,
                                                                                      postgres_server):
    source = postgres_server.create_database()
    app = make_app(database_url=source)
    fill(app, app.test_client())
    config = app.config["SERVICE_CONFIG"]
    made = invoke(cli_env(config.artifacts_dir, source), "backup", str(tmp_path / "b"))
    assert made.exit_code == 0, made.output
    folder = Path(made.stdout.strip())
    written = json.loads((folder / "manifest.json").read_text())
    assert written["store"] == {**written["store"], "backend": "postgresql", "file": pinned.PG_COPY}
    assert (folder / pinned.PG_COPY).read_bytes().startswith(b"PGDMP")  # pg_dump's custom format

    target = cli_env(tmp_path / "new", postgres_server.create_database())
    done = invoke(target, "restore", str(folder))
    assert done.exit_code == 0, done.output
    check_restored(target, source)

    into_sqlite = invoke(cli_env(tmp_path / "other", f"sqlite:///{tmp_path / 'x.db'}"), "restore", str(folder))
    assert into_sqlite.exit_code == 1 and "restores into PostgreSQL only" in into_sqlite.output

"""``backup`` and ``restore`` with PostgreSQL: a SQLite backup restored into PostgreSQL through the
store, and a PostgreSQL deployment backed up with the real pg_dump and restored with pg_restore, or
into SQLite from pg_restore's script."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer

from service.backup import pinned, tables
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


def test_a_postgresql_backup_restores_into_sqlite_row_for_row(make_app, tmp_path, postgres_server):
    """No PostgreSQL server is needed at the target: pg_restore's script is read into a new SQLite file,
    every row of every table equal, typed as the server writes them, the chain and registries intact."""
    source = postgres_server.create_database()
    app = make_app(database_url=source)
    fill(app, app.test_client())
    store = app.extensions["store"]  # a label with every character COPY's text format escapes
    with store.transaction() as db:
        db.execute(store.insert_sql("feedback", ("id", "ts", "label", "model")),
                   ("odd", 1.5, "tab\there, line\nbreak, \r, back\\slash, \\N, é", MODEL))
    config = app.config["SERVICE_CONFIG"]
    before = every_row(source)  # the backup adds its own record and mark to the source afterwards
    assert before["prediction_batches"] and before["alerts"] and before["audit"]
    kinds = {kind for rows in before.values() for row in rows for kind, _ in row}
    assert {"bytes", "int", "float", "str", "NoneType"} <= kinds  # BYTEA, integers, doubles, text and NULL
    folder = Path(invoke(cli_env(config.artifacts_dir, source), "backup", str(tmp_path / "b")).stdout.strip())

    target = cli_env(tmp_path / "other", f"sqlite:///{tmp_path / 'var' / 'restored.db'}")
    done = invoke(target, "restore", str(folder))
    assert done.exit_code == 0, done.output
    check_restored(target, source)
    assert restored_rows(target["DATABASE_URL"]) == before
    again = invoke(target, "restore", str(folder))  # now the target holds rows: refused, unless --force
    assert again.exit_code == 1 and "not empty" in again.output
    forced = invoke(target, "restore", "--force", str(folder))
    assert forced.exit_code == 0, forced.output
    assert restored_rows(target["DATABASE_URL"]) == before

    # a damaged dump (one byte changed) is refused before anything is written
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    dump = damaged / pinned.PG_COPY
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    fresh = cli_env(tmp_path / "third", f"sqlite:///{tmp_path / 'third.db'}")
    refused = invoke(fresh, "restore", str(damaged))
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1, refused.output
    assert not (tmp_path / "third.db").exists()


def typed(value):
    """A value with its type: 1 and 1.0 are equal in Python, not in the store."""
    value = bytes(value) if isinstance(value, memoryview) else value
    return type(value).__name__, value


def restored_rows(url: str) -> dict[str, list[tuple]]:
    """``every_row`` of a restored store, without the record its restore added after the backup's head."""
    rows = every_row(url)
    rows["audit"] = [row for row in rows["audit"] if row[3] != ("str", "backup.restore")]
    return rows


def every_row(url: str) -> dict[str, list[tuple]]:
    """Every row of every table a backup counts, typed, {any} values unpacked, in one order on both backends."""
    store = Store.from_url(url)
    packed = tables.any_columns()
    try:
        found = {}
        for table in pinned.COUNTED:
            try:
                names = [name for name in store.column_names(table) if name != "rowid"]
            except sqlite3.Error:  # a table the server makes on first use (batch_runs): empty
                found[table] = []
                continue
            rows = store.fetch(f"SELECT {', '.join(names)} FROM {table}")  # noqa: S608  # our table names
            found[table] = sorted((tuple(typed(store.unpack(v) if (table, n) in packed else v)
                                         for n, v in zip(names, row, strict=True)) for row in rows), key=repr)
        return found
    finally:
        store.close()


def test_a_dump_of_a_database_not_in_utf8_is_refused_for_sqlite_in_one_line(make_app, tmp_path, postgres_server):
    name = f"latin1_{tmp_path.name[-20:].lower().replace('-', '_')}"
    postgres_server.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0")
    source = postgres_server.url(name)
    app = make_app(database_url=source)
    fill(app, app.test_client())
    config = app.config["SERVICE_CONFIG"]
    folder = Path(invoke(cli_env(config.artifacts_dir, source), "backup", str(tmp_path / "b")).stdout.strip())
    refused = invoke(cli_env(tmp_path / "other", f"sqlite:///{tmp_path / 'x.db'}"), "restore", str(folder))
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1, refused.output
    assert "not UTF-8" in refused.output and "LATIN1" in refused.output
    assert not [path.name for path in tmp_path.iterdir() if "x.db" in path.name]  # nor a half-built copy

"""Large records' column bytes in files beside a SQLite store: read back, erased, purged, damaged."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

from service.explain import past
from service.monitoring.predlog import PredictionLog
from service.store import Store, blobs
from service.store.blobs import BlobFiles, parse
from service.store.retention import trim_log

ROWS = 3_000  # 3,000 rows x 4 float features + outputs: past blobs.MIN_BYTES
FEATURES = [{"name": "customer", "type": "string", "pii": True}] + [
    {"name": f"f{j}", "type": "float"} for j in range(4)]
HOUR = 3600.0


def record(plog: PredictionLog, base: str, now: float, rows: int = ROWS, customers: list[str] | None = None) -> list[str]:
    ids = [f"{base}-{i}" for i in range(rows)]
    columns = {f"f{j}": np.arange(rows, dtype=float) * (j + 1) + now for j in range(4)}
    columns["customer"] = np.array(customers or [f"c{i % 7}" for i in range(rows)], dtype=object)
    assert plog.record("m", 1, base, ids, columns, np.arange(rows) % 2, np.full((rows, 2), 0.5), 1.0, FEATURES,
                       now=now, subject="customer")
    return ids


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "log.sqlite")
    yield store
    store.close()


def refs(store):
    return [ref for (ref,) in store.fetch("SELECT arrays_ref FROM prediction_batches ORDER BY ts")]


def test_a_large_record_keeps_its_bytes_in_a_file_and_reads_back_the_same(store):
    plog = PredictionLog(store, pii_key="k")
    ids = record(plog, "big", 10 * HOUR)
    record(plog, "small", 10 * HOUR + 1, rows=2)
    (big, small) = store.fetch("SELECT arrays IS NULL, arrays_ref FROM prediction_batches ORDER BY ts")
    assert big[0] == 1 and parse(big[1])[0] == f"10-{os.getpid()}.blob"
    assert small[0] == 0 and small[1] is None  # a few hundred bytes stay in the row
    window = plog.window("m", 1, features=FEATURES)
    assert window.columns["f2"][2:].tolist() == (np.arange(ROWS, dtype=float)[::-1] * 3 + 10 * HOUR).tolist()
    assert window.predictions[2:].tolist() == (np.arange(ROWS)[::-1] % 2).tolist()
    logged = past.find(store, "m", ids[1234])
    assert logged.inputs["f1"] == 1234 * 2 + 10 * HOUR
    assert plog.record_feedback("m", [{"id": ids[5], "label": 1}])["accepted"] == 1


def test_damaged_or_missing_bytes_read_as_missing_never_as_other_numbers(store, caplog):
    plog = PredictionLog(store)
    record(plog, "big", 10 * HOUR)
    record(plog, "other", 10 * HOUR + 1)
    found = []
    store.blobs.on_damaged = lambda: found.append(1)
    (path,) = store.blobs.files()
    first, second = refs(store)
    name, offset, _, _ = parse(first)
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    for _ in range(3):  # the monitoring loop reads the same window again and again
        window = plog.window("m", 1, features=FEATURES)
    assert np.isnan(window.columns["f0"][ROWS:]).all() and window.predictions[ROWS:].tolist() == [None] * ROWS
    assert not np.isnan(window.columns["f0"][:ROWS]).any()  # the other record's bytes are intact
    assert found == [1] and caplog.text.count("missing or damaged") == 1  # counted and said once
    path.unlink()
    assert np.isnan(plog.window("m", 1, features=FEATURES).columns["f3"]).all()
    assert found == [1, 1]  # the second record's bytes are gone now too
    for bad in ("../log.sqlite:0:10:0", "x.blob:0", "/etc/passwd.blob:0:1:0", None):
        assert parse(bad) is None and BlobFiles(path.parent).read(bad) is None


def test_erasure_rewrites_the_record_in_its_row_and_zeroes_the_old_bytes(store):
    plog = PredictionLog(store, pii_key="k")
    customers = ["alice" if i % 3 == 0 else "bob" for i in range(ROWS)]
    ids = record(plog, "big", 10 * HOUR, customers=customers)
    ref = refs(store)[0]
    name, offset, length, _ = parse(ref)
    before = (store.blobs.folder / name).read_bytes()[offset:offset + length]
    assert before != bytes(length)

    _, counts = plog.erase("alice")

    assert counts["predictions"] == ROWS // 3 and counts["prediction_batches_rewritten"] == 1
    assert refs(store) == [None]  # what is left lives in the row now
    assert (store.blobs.folder / name).read_bytes()[offset:offset + length] == bytes(length)
    kept = [i for i in range(ROWS) if customers[i] == "bob"]
    window = plog.window("m", 1, features=FEATURES)
    assert window.ids == [ids[i] for i in kept][::-1]
    assert window.columns["f3"].tolist() == [i * 4 + 10 * HOUR for i in kept][::-1]


def test_an_erasure_that_cannot_zero_the_bytes_erases_nothing(store):
    plog = PredictionLog(store, pii_key="k")
    record(plog, "big", 10 * HOUR, customers=["alice"] * ROWS)
    (path,) = store.blobs.files()
    path.chmod(0o400)
    if os.access(path, os.W_OK):  # root writes anyway: make the file unopenable for writing instead
        path.unlink()
        path.mkdir()
    with pytest.raises(sqlite3.Error, match="could not be overwritten"):
        plog.erase("alice")
    assert store.fetch("SELECT rows FROM prediction_batches") == [(ROWS,)]


def test_retention_deletes_an_hours_file_once_all_its_records_are_past_the_cutoff(store):
    plog = PredictionLog(store)
    for hour in (10, 11, 12):
        record(plog, f"h{hour}", hour * HOUR + 5)
    assert len(store.blobs.files()) == 3
    store.purge(older_than_seconds=HOUR, now=12 * HOUR + 1)  # cut-off 11:00:01: hour 10's records go
    assert [p.name.partition("-")[0] for p in store.blobs.files()] == ["11", "12"]
    assert store.fetch("SELECT COUNT(*) FROM prediction_batches") == [(2,)]


def test_the_size_cap_deletes_files_no_record_points_at_after_a_grace_period(store):
    plog = PredictionLog(store)
    for hour in (10, 11, 12):
        record(plog, f"h{hour}", hour * HOUR + 5)
    trim_log(store, max_rows=2 * ROWS, low_water=0.5)  # the two oldest records go
    assert store.fetch("SELECT COUNT(*) FROM prediction_batches") == [(1,)]
    # their hours ended long ago (timestamps of 1970): past the grace period, so their files go
    assert [p.name.partition("-")[0] for p in store.blobs.files()] == ["12"]
    assert store.blobs.purge_unreferenced(None, now=13 * HOUR + blobs.CAP_GRACE_SECONDS - 1) == 0


def test_a_blob_folder_that_cannot_be_written_keeps_the_bytes_in_the_row(store, caplog):
    store.blobs.folder.write_text("not a folder")
    plog = PredictionLog(store)
    ids = record(plog, "big", 10 * HOUR)
    assert store.fetch("SELECT arrays IS NULL, arrays_ref FROM prediction_batches") == [(0, None)]
    assert past.find(store, "m", ids[7]).inputs["f0"] == 7 + 10 * HOUR
    assert "blob file could not be written" in caplog.text


def test_a_forked_child_writes_files_of_its_own(store):
    plog = PredictionLog(store)
    record(plog, "parent", 10 * HOUR)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            record(PredictionLog(store), "child", 10 * HOUR + 1)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert {p.name for p in store.blobs.files()} == {f"10-{os.getpid()}.blob", f"10-{pid}.blob"}
    assert len(plog.window("m", 1, features=FEATURES).ids) == 2 * ROWS


def test_a_served_record_whose_bytes_are_lost_moves_the_dropped_counter_once(make_app, monkeypatch):
    """Where operators look: records_dropped_total{reason="unreadable"}, once per record and worker."""
    from sklearn.datasets import load_breast_cancer

    from service.monitoring import metrics

    monkeypatch.setattr(metrics, "_current", None)  # this process's counters, fresh
    app = make_app()
    client = app.test_client()
    rows = load_breast_cancer().data[:155].tolist() * 6  # 930 rows: past the blob threshold
    assert client.post("/v1/models/breast-cancer:predict", json={"instances": rows}).status_code == 200
    app.extensions["observer"].flush()
    store = app.extensions["store"]
    (path,) = store.blobs.files()
    path.write_bytes(bytes(path.stat().st_size))  # zeroed, as a machine crash may leave it

    def unreadable() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        lines = [line for line in text.splitlines()
                 if line.startswith('sklearn_server_records_dropped_total{reason="unreadable"}')]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    assert unreadable() == 0.0
    for _ in range(2):
        assert client.get("/v1/models/breast-cancer/monitoring").status_code == 200
    assert unreadable() == 1.0

"""One watch around each inference; its outcome is queued and written off the request's path, in batches."""

from __future__ import annotations

import os

import pytest

from service.errors import ModelNotFound
from service.monitoring.observe import Observer
from service.monitoring.outbox import Outbox
from service.monitoring.predlog import PredictionLog
from service.monitoring.record_format import unpack
from service.monitoring.spool import Spool
from service.protocols import v1
from service.serving import inference
from service.serving.catalog import Catalog
from service.serving.inference import Limits, Target
from service.store import Store
from tests.builders import logged_ids, wait_until

LIMITS = Limits(max_rows=100, vectorized_min_rows=4)
ROW = [50, 1, 25.0, 90.0, 150, 100.0, 50.0, 3.0, 4.5, 90]


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "db.sqlite")


@pytest.fixture
def observer(store):
    observer = Observer(store, PredictionLog(store))
    yield observer
    observer.close()


@pytest.fixture
def catalog(artifact_root):
    catalog = Catalog(artifact_root)
    catalog.refresh()
    return catalog


def requests_of(store, model):
    return {r["request_id"]: dict(r) for r in store.requests_since(model, 0)}


def answer_one(observer, catalog, request_id, rows=(ROW,)):
    target = Target("diabetes")
    with observer.watch(target, request_id) as watch:
        request = v1.decode({"instances": list(rows)}, target, max_rows=100)
        return watch.answered(inference.predict(catalog, request, LIMITS))


def test_an_answer_is_queued_then_written_with_its_predictions(observer, catalog, store):
    answer = answer_one(observer, catalog, "req-ok", rows=[ROW, ROW])
    observer.close()
    row = requests_of(store, "diabetes")["req-ok"]
    assert (row["status"], row["version"], row["rows"]) == (200, answer.version, 2)
    logged = set(logged_ids(store))
    assert logged == set(answer.ids)


def spooled_observer(store, folder, monkeypatch):
    """An observer with a spool whose writer thread never runs (as in a worker about to be killed)."""
    observer = Observer(store, PredictionLog(store),
                        outbox=Outbox(store, PredictionLog(store), Spool(folder, max_bytes=2**20), background=False))
    monkeypatch.setattr(observer._recorder, "_start", lambda: None)
    observer._recorder._pid = -1
    return observer


def test_an_answer_is_spooled_before_it_leaves_so_a_killed_worker_keeps_it(catalog, store, tmp_path, monkeypatch):
    observer = spooled_observer(store, tmp_path / "spool", monkeypatch)
    answer = answer_one(observer, catalog, "req-kept", rows=[ROW, ROW])
    assert observer.pending == 1  # the writer has not run
    for segment in observer.outbox.spool.segments:  # killed: its descriptors and locks go with it
        os.close(segment.fd)
    heir = Outbox(store, PredictionLog(store), Spool(tmp_path / "spool", max_bytes=2**20), background=False)
    heir.pump()
    assert requests_of(store, "diabetes")["req-kept"]["rows"] == 2
    assert set(logged_ids(store)) == set(answer.ids)


def test_the_writer_counts_a_spooled_answer_without_spooling_it_again(catalog, store, tmp_path, monkeypatch):
    observer = spooled_observer(store, tmp_path / "spool", monkeypatch)
    answer_one(observer, catalog, "req-once")
    observer._recorder.flush()  # the writer's part: metrics and quality only
    chunk = observer.outbox.spool.pending()
    assert [unpack(record)[0][0] for record in chunk.records] == ["req-once"]
    observer.close()
    assert list(requests_of(store, "diabetes")) == ["req-once"]


def test_the_writer_thread_writes_without_being_asked(observer, catalog, store):
    answer_one(observer, catalog, "req-bg")
    assert wait_until(lambda: "req-bg" in requests_of(store, "diabetes"), timeout=10)
    assert observer.pending == 0


@pytest.mark.parametrize(("error", "status", "code"), [
    (ModelNotFound(details={"model": "nope"}), 404, "model_not_found"),
    (RuntimeError("a bug"), 500, "internal_error"),
])
def test_an_error_is_recorded_once_with_its_status_and_raised_unchanged(observer, store, error, status, code):
    with pytest.raises(type(error)) as raised, observer.watch(Target("nope"), "req-bad"):
        raise error
    assert raised.value is error
    observer.flush()
    row = requests_of(store, "nope")["req-bad"]
    assert (row["status"], row["error"], row["role"]) == (status, code, "error")


def test_a_watch_left_without_an_answer_records_nothing(observer, store):
    with observer.watch(Target("diabetes"), "req-none"):
        pass
    observer.flush()
    assert requests_of(store, "diabetes") == {}


def test_many_answers_are_written_in_one_transaction(catalog, store, monkeypatch):
    observer = Observer(store, PredictionLog(store))
    transactions = []
    original = store.transaction
    monkeypatch.setattr(store, "transaction", lambda *a, **k: transactions.append(a) or original(*a, **k))
    observer._recorder._pid = -1  # pretend a writer runs elsewhere: nothing is written until the flush below
    monkeypatch.setattr(observer._recorder, "_start", lambda: None)
    for i in range(20):
        answer_one(observer, catalog, f"req-{i}")
    observer.flush()
    assert transactions == [()]
    assert len(requests_of(store, "diabetes")) == 20 and len(logged_ids(store)) == 20


def test_the_request_row_and_quality_checks_can_be_switched_off(catalog, store):
    observer = Observer(store, None, record_requests=False, check_quality=False)
    answer_one(observer, catalog, "req-quiet")
    observer.close()
    assert requests_of(store, "diabetes") == {}


def test_a_full_queue_makes_the_request_record_itself_instead_of_losing(catalog, store, monkeypatch):
    observer = Observer(store, PredictionLog(store), capacity=3)
    monkeypatch.setattr(observer._recorder, "_start", lambda: None)
    observer._recorder._pid = -1
    for i in range(5):
        answer_one(observer, catalog, f"req-{i}")
    assert observer.pending == 3 and observer._recorder.dropped == 0
    observer.flush()
    assert len(requests_of(store, "diabetes")) == 5
    assert observer.outbox.dropped == {}


def test_a_queue_full_of_rows_takes_no_more_however_few_items(catalog, store, monkeypatch):
    observer = Observer(store, PredictionLog(store), capacity_rows=3)
    monkeypatch.setattr(observer._recorder, "_start", lambda: None)
    observer._recorder._pid = -1
    answer_one(observer, catalog, "req-big", rows=[ROW] * 5)  # alone it is taken, whatever its size
    answer_one(observer, catalog, "req-next")
    assert observer.pending == 1
    observer.flush()
    assert set(requests_of(store, "diabetes")) == {"req-big", "req-next"}


def test_a_broken_database_never_reaches_the_caller(catalog, tmp_path):
    store = Store(tmp_path / "missing-dir" / "sub" / "db.sqlite")
    observer = Observer(store, PredictionLog(store))
    answer = answer_one(observer, catalog, "req-x")
    assert answer.version >= 1
    observer.close()  # the failed write is logged and counted, not raised


def test_each_outcome_is_counted_by_the_protocol_that_carried_it(observer, catalog, monkeypatch):
    from service.monitoring import metrics

    counted = []
    monkeypatch.setattr(metrics, "observe_protocol", lambda model, protocol, outcome: counted.append(
        (model, protocol, outcome)))
    target = Target("diabetes")
    with observer.watch(target, "req-v2", "v2") as watch:
        watch.answered(inference.predict(catalog, v1.decode({"instances": [ROW]}, target, max_rows=100), LIMITS))
    with pytest.raises(ModelNotFound), observer.watch(Target("diabetes"), "req-mlflow", "mlflow"):
        raise ModelNotFound(details={"model": "diabetes"})
    observer.flush()
    assert counted == [("diabetes", "v2", "ok"), ("diabetes", "mlflow", "invalid")]


def test_the_protocol_metric_refuses_a_protocol_it_does_not_know():
    from prometheus_client import CollectorRegistry

    from service.monitoring.metrics import Metrics

    fresh = Metrics(CollectorRegistry())
    with pytest.raises(ValueError):
        fresh.observe_protocol("diabetes", "grpc", "ok")


def test_a_batch_the_writer_could_not_write_is_counted_as_dropped():
    """Nothing the writer loses goes uncounted: a write that raises counts its items."""
    from service.monitoring.recorder import Recorder

    counted = []

    def broken(batch):
        raise RuntimeError("a bug in the writer")

    recorder = Recorder(broken, on_drop=counted.append)
    recorder._pid = -1  # no thread: the flush below writes
    recorder._start = lambda: None
    for i in range(3):
        assert recorder.put(i)
    recorder.flush()
    assert counted == [3] and recorder.dropped == 3

"""The versions a master holds before fork: what a worker may take, and what it must load itself."""

import shutil

import pytest

from service.errors import ArtifactError
from service.models import demo
from service.serving import preload, runtime
from tests.builders import copy_version, flip_byte


@pytest.fixture(autouse=True)
def nothing_held(monkeypatch):
    monkeypatch.setattr(preload, "_held", {})


def take(root, name, version, backend=runtime.AUTO):
    return preload.take(root / name / str(version), name=name, version=version, backend=backend)


def test_the_master_holds_every_version_prepared_with_a_session_every_process_shares(artifact_root, monkeypatch):
    prepared = []
    assert preload.hold_all(artifact_root, prepare=prepared.append) == 2
    model = take(artifact_root, "breast-cancer", 1)
    assert model is not None and model.backend == "onnx" and model in prepared
    session = model.session()[0]
    monkeypatch.setattr(runtime.os, "getpid", lambda: -1)  # as seen from a forked worker
    assert model.session()[0] is session
    X = demo.breast_cancer()["X"].iloc[:3]
    assert list(model.predict({c: X[c].to_numpy() for c in X.columns}).predictions) == \
        list(model.estimator.predict(X))


def test_a_worker_on_another_backend_or_a_version_the_master_never_saw_loads_its_own(artifact_root):
    preload.hold_all(artifact_root)
    assert take(artifact_root, "diabetes", 1, backend=runtime.JOBLIB) is None
    copy_version(artifact_root, "diabetes", 1, 2)
    assert take(artifact_root, "diabetes", 2) is None
    assert preload.hold_all(artifact_root) == 3  # HUP: the new version joins, the held ones stay
    assert take(artifact_root, "diabetes", 2) is not None


def test_files_changed_after_the_master_loaded_them_are_refused_not_served(artifact_root):
    preload.hold_all(artifact_root)
    flip_byte(artifact_root / "diabetes" / "1" / "model.joblib")
    with pytest.raises(ArtifactError):
        take(artifact_root, "diabetes", 1)
    assert preload.hold_all(artifact_root) == 1  # HUP verifies what is held again, and lets it go
    assert take(artifact_root, "diabetes", 1) is None


def test_a_manifest_rewritten_since_the_master_verified_it_sends_the_worker_to_its_own_load(artifact_root):
    preload.hold_all(artifact_root)
    copy_version(artifact_root, "diabetes", 1, 2)
    shutil.rmtree(artifact_root / "diabetes" / "1")
    shutil.copytree(artifact_root / "diabetes" / "2", artifact_root / "diabetes" / "1")  # same files, manifest says 2
    assert take(artifact_root, "diabetes", 1) is None
    with pytest.raises(ArtifactError):  # and that load refuses it
        runtime.load(artifact_root / "diabetes" / "1", name="diabetes", version=1)


def test_a_version_the_master_cannot_load_is_left_to_the_workers_and_a_removed_one_let_go(artifact_root):
    flip_byte(artifact_root / "diabetes" / "1" / "model.joblib")
    assert preload.hold_all(artifact_root) == 1
    assert take(artifact_root, "breast-cancer", 1) is not None
    shutil.rmtree(artifact_root / "breast-cancer" / "1")
    assert preload.hold_all(artifact_root) == 0 and preload.held() == 0

import json
import logging
import os
import shutil
from types import MappingProxyType, SimpleNamespace

import numpy as np
import pytest

from service.errors import LabelNotFound, ModelNotFound, ModelUnavailable, RegistryStateUnavailable, VersionNotFound
from service.models import registry
from service.serving.catalog import (
    AVAILABLE,
    FAILED,
    FROM_FILE,
    FROM_LAST_GOOD,
    FROM_MEMORY,
    NO_STATE,
    REGISTRY_UNREADABLE,
    Catalog,
)
from service.serving.runtime import BackendChoice
from tests import builders
from tests.builders import flip_byte

ROWS = {"x": np.array([0.5, 4.5])}


def package(root, name="m"):
    return builders.package(root, name, record=True)["version"]



@pytest.fixture
def root(tmp_path):
    """Model ``m`` with versions 1 (production), 2 (staging) and 3 (tampered, canary); model ``other`` with 1."""
    for _ in range(3):
        package(tmp_path)
    package(tmp_path, "other")
    registry.set_label(tmp_path, "m", "staging", 2, actor="test")
    registry.set_label(tmp_path, "m", "canary", 3, actor="test")
    flip_byte(tmp_path / "m" / "3" / "model.joblib")
    return tmp_path


@pytest.fixture
def catalog(root):
    catalog = Catalog(root, poll_seconds=0)
    catalog.refresh()
    return catalog


def test_refresh_loads_every_version(catalog):
    assert sorted(state.name for state in catalog.models()) == ["m", "other"]
    m = catalog.model("m")
    assert sorted(m.versions) == [1, 2, 3]
    assert dict(m.labels) == {"production": 1, "staging": 2, "canary": 3}
    assert m.registry_error is None
    assert [m.versions[v].status for v in (1, 2)] == [AVAILABLE, AVAILABLE]
    assert catalog.model("other").versions[1].status == AVAILABLE


def test_a_tampered_version_fails_with_its_reason_while_the_others_serve(root, caplog):
    catalog = Catalog(root, poll_seconds=0)
    with caplog.at_level(logging.ERROR, logger="service.serving.catalog"):
        catalog.refresh()
    failed = catalog.model("m").versions[3]
    assert failed.status == FAILED
    assert failed.reason == "file model.joblib does not match its sha256 in the manifest"
    assert failed.model is None
    [record] = [r for r in caplog.records if r.getMessage() == "model version refused"]
    assert (record.model, record.version, record.reason) == ("m", 3, failed.reason)
    assert catalog.resolve("m").version == 1
    assert catalog.resolve("m", label="staging").predict(ROWS).predictions.tolist() == [0, 1]


def test_resolve_by_production_version_and_label(catalog):
    assert (catalog.resolve("m").name, catalog.resolve("m").version) == ("m", 1)
    assert catalog.resolve("m", version=2).version == 2
    assert catalog.resolve("m", label="staging").version == 2
    assert catalog.resolve("other").version == 1


def test_resolve_errors(catalog):
    with pytest.raises(ModelNotFound) as excinfo:
        catalog.resolve("nope")
    assert (excinfo.value.status, excinfo.value.details) == (404, {"model": "nope"})
    with pytest.raises(VersionNotFound) as excinfo:
        catalog.resolve("m", version=9)
    assert excinfo.value.details == {"model": "m", "version": 9}
    with pytest.raises(LabelNotFound) as excinfo:
        catalog.resolve("m", label="shadow")
    assert excinfo.value.message == "Model 'm' has no label 'shadow'."
    assert excinfo.value.details == {"model": "m", "label": "shadow"}
    for kwargs in ({"version": 3}, {"label": "canary"}):
        with pytest.raises(ModelUnavailable) as excinfo:
            catalog.resolve("m", **kwargs)
        assert excinfo.value.status == 503
        assert excinfo.value.message == "Version 3 of 'm' is FAILED."
        assert excinfo.value.details == {"model": "m", "version": 3, "status": FAILED}


def test_a_model_without_production_label_has_no_default(root, catalog):
    registry.remove_label(root, "other", "production", actor="test")
    catalog.refresh()
    with pytest.raises(LabelNotFound, match="has no label 'production'"):
        catalog.resolve("other")


def test_readiness(root, catalog):
    assert catalog.readiness() == (True, {"m": {"production": 1, "status": AVAILABLE},
                                          "other": {"production": 1, "status": AVAILABLE}})
    registry.update(root, "m", lambda state: state["labels"].update(production=3) or {"action": "test"}, actor="t")
    catalog.refresh()
    ready, report = catalog.readiness()
    # the worker keeps serving the verified version 1 and stays ready, but says what it could not do
    assert ready is True and report["m"]["production"] == 1 and report["m"]["status"] == AVAILABLE
    assert report["m"]["wanted"] == 3 and report["m"]["wanted_status"] == FAILED
    assert "sha256" in report["m"]["wanted_reason"]
    fresh = Catalog(root)  # a worker booting now has nothing to keep and nothing older to fall back to
    fresh.refresh()
    ready, report = fresh.readiness()
    assert ready is False and report["m"] == {"production": 3, "status": FAILED}
    registry.update(root, "m", lambda state: state["labels"].update(production=7) or {"action": "test"}, actor="t")
    fresh.refresh()
    assert fresh.readiness() == (False, {"m": {"production": 7, "status": "MISSING"},
                                         "other": {"production": 1, "status": AVAILABLE}})


def test_an_empty_root_is_not_ready(tmp_path):
    catalog = Catalog(tmp_path / "nothing-here")
    catalog.refresh()
    assert catalog.models() == []
    assert catalog.readiness() == (False, {})


def test_a_label_change_on_disk_is_seen_after_refresh(root, catalog):
    registry.set_label(root, "m", "production", 2, actor="test")
    assert catalog.resolve("m").version == 1  # not before the refresh
    catalog.refresh()
    assert catalog.resolve("m").version == 2


def test_new_versions_are_loaded_and_removed_ones_dropped(root, catalog):
    assert package(root) == 4
    shutil.rmtree(root / "m" / "2")
    catalog.refresh()
    assert sorted(catalog.model("m").versions) == [1, 3, 4]
    assert catalog.model("m").versions[4].status == AVAILABLE
    with pytest.raises(VersionNotFound):
        catalog.resolve("m", version=2)


def test_a_model_resolved_before_a_refresh_still_works_after_it(root, catalog):
    in_flight = catalog.resolve("m")
    registry.set_label(root, "m", "production", 2, actor="test")
    shutil.rmtree(root / "m" / "1")
    catalog.refresh()
    assert catalog.resolve("m").version == 2
    assert in_flight.version == 1
    assert in_flight.predict(ROWS, probabilities=True).predictions.tolist() == [0, 1]


def test_a_loaded_version_is_not_reloaded(root, catalog):
    before = catalog.resolve("m", version=1)
    catalog.refresh()
    assert catalog.resolve("m", version=1) is before


def test_an_unreadable_registry_keeps_the_last_good_labels(root, catalog):
    (root / "m" / "registry.json").write_text("{broken")
    catalog.refresh()
    state = catalog.model("m")
    assert dict(state.labels) == {"production": 1, "staging": 2, "canary": 3}
    assert "registry.json is not valid JSON" in state.registry_error
    assert state.registry_source == FROM_LAST_GOOD
    assert catalog.resolve("m").version == 1


def test_a_worker_booted_after_the_registry_broke_serves_the_last_good_state(root, catalog):
    registry.set_rollout(root, "m", shadow=[2], actor="test")
    catalog.refresh()
    (root / "m" / "registry.json").write_text("[]")
    fresh = Catalog(root, poll_seconds=0)
    fresh.refresh()
    state = fresh.model("m")
    assert dict(state.labels) == dict(catalog.model("m").labels) == {"production": 1, "staging": 2, "canary": 3}
    assert dict(state.rollout) == dict(catalog.model("m").rollout) and state.rollout["shadow"] == [2]
    assert state.registry_source == FROM_LAST_GOOD and "not a registry state" in state.registry_error
    assert fresh.resolve("m").version == 1 and fresh.resolve("m", label="staging").version == 2
    ready, report = fresh.readiness()
    assert ready is True
    assert report["m"] == {"production": 1, "status": AVAILABLE, "registry": FROM_LAST_GOOD,
                           "registry_error": state.registry_error, "registry_code": "registry_unreadable"}
    assert str(root) not in state.registry_error
    assert report["other"] == {"production": 1, "status": AVAILABLE}


def test_a_running_worker_without_a_copy_keeps_what_it_serves(root, catalog):
    (root / "m" / "registry.json").write_text("{broken")
    (root / "m" / registry.LAST_GOOD_FILE).unlink()
    catalog.refresh()
    state = catalog.model("m")
    assert state.registry_source == FROM_MEMORY and dict(state.labels)["production"] == 1
    assert catalog.resolve("m").version == 1
    ready, report = catalog.readiness()
    assert ready is True and report["m"]["registry"] == FROM_MEMORY


def test_a_worker_booted_with_no_state_at_all_is_not_ready(root):
    (root / "m" / "registry.json").write_text("{broken")
    (root / "m" / registry.LAST_GOOD_FILE).unlink()
    fresh = Catalog(root, poll_seconds=0)
    fresh.refresh()
    state = fresh.model("m")
    assert state.registry_source == NO_STATE and dict(state.labels) == {}
    with pytest.raises(RegistryStateUnavailable) as caught:
        fresh.resolve("m", label="staging")
    assert caught.value.status == 503 and caught.value.details["reason"] == state.registry_error
    with pytest.raises(LabelNotFound):
        fresh.resolve("other", label="staging")  # a model whose state is known still says 404
    assert fresh.resolve("m", version=2).version == 2  # pinned versions need no registry state
    fresh.refresh()  # still nothing: the state does not turn into "memory" of nothing
    ready, report = fresh.readiness()
    assert ready is False
    assert report["m"] == {"status": REGISTRY_UNREADABLE, "registry": NO_STATE,
                           "registry_error": fresh.model("m").registry_error, "registry_code": "registry_unreadable"}


def test_a_repaired_registry_is_picked_up_by_the_next_refresh(root, catalog, caplog):
    good = (root / "m" / "registry.json").read_bytes()
    (root / "m" / "registry.json").write_text("{broken")
    with caplog.at_level(logging.INFO, logger="service.serving.catalog"):
        catalog.refresh()
        catalog.refresh()  # said once, not on every poll
        fixed = json.loads(good)
        fixed["labels"]["production"] = 2
        (root / "m" / "registry.json").write_text(json.dumps(fixed))
        older = (root / "m" / "registry.json").stat().st_mtime_ns - 1_000_000  # file clocks tick coarsely
        os.utime(root / "m" / registry.LAST_GOOD_FILE, ns=(older, older))
        catalog.refresh()
    state = catalog.model("m")
    assert state.registry_error is None and state.registry_source == FROM_FILE
    assert catalog.resolve("m").version == 2
    assert catalog.readiness()[1]["m"] == {"production": 2, "status": AVAILABLE}
    assert [r.getMessage() for r in caplog.records] == ["registry.json unreadable; serving its last-good copy",
                                                        "registry.json readable again"]
    # the repaired file is the new last good state
    assert json.loads((root / "m" / registry.LAST_GOOD_FILE).read_text())["labels"]["production"] == 2


def test_a_malformed_manifest_fails_its_version_not_the_refresh(root, catalog):
    package(root)
    manifest_path = root / "m" / "4" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["model.joblib"] = "not an object"
    manifest_path.chmod(0o644)
    manifest_path.write_text(json.dumps(manifest))
    catalog.refresh()
    assert catalog.model("m").versions[4].status == FAILED
    assert catalog.model("m").versions[4].reason == "manifest entry for model.joblib is not an object"
    assert catalog.resolve("m").version == 1


def test_warm_up_opens_each_onnx_session_before_any_request(artifact_root):
    catalog = Catalog(artifact_root, backend=BackendChoice.parse("onnx"))
    catalog.refresh()
    loaded = [entry.model for state in catalog.models() for entry in state.versions.values() if entry.model]
    assert loaded and all(model.backend == "onnx" for model in loaded)
    assert all(model._session is None for model in loaded)
    assert catalog.warm_up() == len(loaded)
    assert all(model._session is not None for model in loaded)


def test_warm_up_leaves_joblib_versions_alone(artifact_root):
    catalog = Catalog(artifact_root, backend=BackendChoice.parse("joblib"))
    catalog.refresh()
    assert catalog.warm_up() == 0


def test_a_state_is_sized_by_its_widest_loaded_version():
    from service.serving.catalog import AVAILABLE, FAILED, ModelState, VersionState

    narrow, wide = SimpleNamespace(features=[{}] * 2), SimpleNamespace(features=[{}] * 5)
    versions = {1: VersionState(1, AVAILABLE, model=narrow), 2: VersionState(2, AVAILABLE, model=wide),
                3: VersionState(3, FAILED, "bad hash")}
    assert ModelState("m", MappingProxyType(versions), MappingProxyType({})).widest == 5
    del versions[2]
    assert ModelState("m", MappingProxyType(versions), MappingProxyType({})).widest == 2
    assert ModelState("m", MappingProxyType({3: versions[3]}), MappingProxyType({})).widest == 0

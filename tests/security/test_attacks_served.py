"""The planted-version attack against a real Gunicorn server (2 workers polling the disk), as reported:
unsigned, a worker loaded it within seconds; with trusted keys every worker refuses it, unpickled never."""

from __future__ import annotations

import shutil

from service.security import audit, signing
from service.store import Store
from tests.api.test_faults import replace_model_file
from tests.builders import copy_version, wait_until
from tests.faulty_models import MarkerOnUnpickle
from tests.security.test_attacks import sign_everything


def test_a_planted_version_is_refused_by_every_worker(demo_root, tmp_path, server_factory):
    root = tmp_path / "artifacts"
    shutil.copytree(demo_root, root)
    private, public, _ = signing.generate(tmp_path / "signing")
    sign_everything(root, private)
    server = server_factory(root, MODEL_TRUSTED_KEYS=str(public))
    assert server.get("/v1/models/diabetes").status_code == 200  # signed versions load

    marker = tmp_path / "unpickled.marker"
    staging = tmp_path / "staging"
    shutil.copytree(root, staging)
    planted = copy_version(staging, "diabetes", 1, 7)
    replace_model_file(planted, MarkerOnUnpickle(marker))
    shutil.copytree(planted, root / "diabetes" / "7")  # appears whole, as an attacker's rename would

    store = Store.from_url(f"sqlite:///{root.parent / f'db-{server.port}' / 'predictions.db'}")
    try:
        refusals = wait_until(lambda: len(audit.find(store, "artifact.refused")) >= 2 or None, timeout=30,
                              message="both workers refused version 7")
        assert refusals and not marker.exists()
        assert {r.details["version"] for r in audit.find(store, "artifact.refused")} == {7}
        assert server.get("/v1/models/diabetes/versions/7").json()["status"] == "FAILED"
        assert audit.verify(store).ok
    finally:
        store.close()

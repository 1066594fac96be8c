"""The app factory's module list: what the Gunicorn master imports before forking is all the app needs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_preloaded_modules_are_all_a_worker_imports_to_build_the_app_and_answer(demo_root, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import service.app
        from service.config import Config
        from service.monitoring import metrics

        service.app.preload_modules()
        metrics.prepare_multiprocess_dir({str(tmp_path / "prom")!r})
        before = set(sys.modules)
        config = Config(artifacts_dir={str(demo_root)!r}, database_url="sqlite:///{tmp_path / 'p.db'}",
                        poll_seconds=0, alert_seconds=0, guard_seconds=0)
        app = service.app.create_app(config)
        with app.test_request_context():
            pass
        client = app.test_client()
        answer = client.post("/v1/models/breast-cancer:predict", json={{"instances": [[1.0] * 30]}})
        assert answer.status_code == 200, answer.get_data()
        late = sorted(m for m in set(sys.modules) - before if m.startswith("service"))
        print(",".join(late))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1:] in ([], [""]), f"imported after the fork: {done.stdout}"


def test_close_app_stops_every_loop_it_started_and_closes_the_store(make_app):
    """What a Gunicorn worker's exit and every test's teardown rely on: no loop outlives its app
    (one left running would go on writing to a database that is gone), no connection stays open."""
    import threading

    from service.app import close_app

    app = make_app(poll_seconds=3600, guard_seconds=3600, alert_seconds=3600, retention_seconds=3600)
    assert app.test_client().get("/v1/models/diabetes/monitoring").status_code == 200
    loops = {"catalog-poll", "rollout-guard", "alert-loop", "retention-loop"}
    assert loops <= {thread.name for thread in threading.enumerate()}
    store = app.extensions["store"]
    assert store._opened
    assert close_app(app) is True
    assert not loops & {thread.name for thread in threading.enumerate() if thread.is_alive()}
    assert store._opened == []

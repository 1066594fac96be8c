"""The image's cloud contracts against real Gunicorn, selected by the platforms' own variables only.

- Vertex AI (https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements):
  listen on AIP_HTTP_PORT, answer GET AIP_HEALTH_ROUTE with 200 once ready, and POST
  AIP_PREDICT_ROUTE ``{"instances": [...], "parameters": {...}}`` with ``{"predictions": [...]}``.
- SageMaker (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html):
  started as ``serve``, listen on 8080 (or SAGEMAKER_BIND_TO_PORT), GET /ping, POST /invocations,
  the model archive unpacked at /opt/ml/model.
- Azure ML custom containers (https://learn.microsoft.com/azure/machine-learning/how-to-deploy-custom-container):
  the registered model mounted at AZUREML_MODEL_DIR (the registered folder inside it), and the
  liveness, readiness and scoring routes the deployment declares: /healthz, /ping, /invocations.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from tests.conftest import GUNICORN, REPO, Server, free_port, server_env

pytestmark = pytest.mark.e2e

ROWS = load_breast_cancer().data[:4].tolist()


def start(command: list[str], env: dict[str, str], port: int, log: Path, ready: str) -> Server:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, port, log)
    try:
        server.wait_ready(timeout=60, path=ready)
    except Exception:
        server.stop()
        raise
    return server


def platform_env(artifacts: Path, unset: tuple[str, ...] = ("PORT",), **platform: str) -> dict[str, str]:
    """Our test environment without the settings (``unset``) the platform's variables stand in for."""
    env = server_env(artifacts, 0, ALLOW_UNAUTHENTICATED="1", **platform)
    for name in unset:
        del env[name]
    return env


def test_vertex_ai_probes_and_predicts_on_the_routes_and_port_it_names(demo_root, tmp_path):
    port = free_port()
    health = "/v1/endpoints/1234567890/deployedModels/9876543210"
    env = platform_env(demo_root, AIP_HTTP_PORT=str(port), AIP_HEALTH_ROUTE=health,
                       AIP_PREDICT_ROUTE=health + ":predict", DEFAULT_MODEL="breast-cancer")
    server = start([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:application"], env, port, tmp_path / "log", health)
    try:
        answer = server.post(health + ":predict", json={"instances": ROWS, "parameters": {}})
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 4
        direct = server.post("/v1/models/breast-cancer:predict", json={"instances": ROWS})
        assert answer.json()["predictions"] == direct.json()["predictions"]
    finally:
        server.stop()


def test_sagemaker_starts_the_image_with_serve_and_the_archive_in_its_model_folder(demo_root, tmp_path):
    model_dir = tmp_path / "opt-ml-model"  # what /opt/ml/model holds once SageMaker unpacked model.tar.gz
    shutil.copytree(demo_root, model_dir)
    shutil.rmtree(model_dir / "diabetes")  # one model in the archive: /invocations serves it
    port = free_port()
    env = platform_env(tmp_path / "elsewhere", SAGEMAKER_BIND_TO_PORT=str(port))
    env["PATH"] = f"{GUNICORN.parent}:{env['PATH']}"
    server = start(["sh", str(REPO / "deploy/container/serve"), str(model_dir)], env, port, tmp_path / "log", "/ping")
    try:
        csv = load_breast_cancer(as_frame=True).data.iloc[:4].to_csv(index=False)
        answer = server.post("/invocations", data=csv, headers={"Content-Type": "text/csv"})
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 4
    finally:
        server.stop()


def test_azure_ml_serves_the_registered_folder_on_the_routes_the_deployment_declares(demo_root, tmp_path):
    mounted = tmp_path / "azureml-models" / "diabetes-model" / "1"  # AZUREML_MODEL_DIR
    shutil.copytree(demo_root, mounted / "artifacts")  # `az ml model create --path artifacts`
    port = free_port()
    env = platform_env(tmp_path / "elsewhere", ("ARTIFACTS_DIR",), AZUREML_MODEL_DIR=str(mounted), PORT=str(port),
                       DEFAULT_MODEL="diabetes")
    server = start([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:application"], env, port, tmp_path / "log", "/ping")
    try:
        assert server.get("/healthz").status_code == 200  # liveness_route
        rows = load_diabetes(as_frame=True, scaled=False).data.iloc[:3].astype({"age": "int64", "sex": "int64"})
        answer = server.post("/invocations", json={"dataframe_split": rows.to_dict(orient="split")})  # scoring_route
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 3
    finally:
        server.stop()

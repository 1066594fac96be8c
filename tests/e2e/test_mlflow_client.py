"""MLflow's own scoring-server client against real Gunicorn: only the URL changes for an MLflow user.

``ScoringServerClient`` is what MLflow uses to talk to ``mlflow models serve``: ``ping``,
``get_version`` and ``invoke`` (a DataFrame, optionally with params). A SageMaker-style caller
needs ``/ping`` and a CSV ``/invocations``; that is checked here too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from tests.conftest import Server, start_server

with warnings.catch_warnings():  # MLflow warns about optional extras at import; none concerns its client
    warnings.simplefilter("ignore")
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(demo_root, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(demo_root, tmp_path_factory.mktemp("logs"), DEFAULT_MODEL="breast-cancer")
    yield server
    server.stop()


def test_mlflows_client_scores_against_the_server(server):
    frame = load_breast_cancer(as_frame=True).data.iloc[:20]
    client = ScoringServerClient("127.0.0.1", server.port)
    client.ping()
    assert '"model":"breast-cancer"' in client.get_version()
    answer = client.invoke(frame)
    expected = server.post("/v1/models/breast-cancer:predict", json={"instances": frame.to_dict(orient="records"),
                                                                       "parameters": {"probabilities": True}}).json()
    assert answer.get_predictions(predictions_format="ndarray").tolist() == expected["predictions"]
    with_probabilities = client.invoke(frame, params={"probabilities": True})
    assert with_probabilities["probabilities"] == expected["probabilities"]


def test_a_sagemaker_style_caller_pings_and_sends_csv(server):
    frame = load_breast_cancer(as_frame=True).data.iloc[:5]
    assert server.get("/ping").status_code == 200
    response = server.post("/invocations", data=frame.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"
    assert len(response.json()["predictions"]) == 5
    bad = server.post("/invocations", data="mean radius\nnot-a-number\n", headers={"Content-Type": "text/csv"})
    assert bad.status_code == 422 and bad.json()["error_code"] == "BAD_REQUEST"


def test_the_client_sees_a_failure_as_a_failure(server):
    client = ScoringServerClient("127.0.0.1", server.port)
    with pytest.raises(Exception, match="error code 422"):
        client.invoke(pd.DataFrame({"mean radius": [1.0]}))

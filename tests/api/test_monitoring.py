"""The monitoring endpoint's windows through the HTTP shell, in-process."""

from __future__ import annotations

import json

from sklearn.datasets import load_diabetes

from tests.builders import wait_until


def diabetes_records(n: int) -> list[dict]:
    data = load_diabetes(as_frame=True, scaled=False).data.astype({"age": "int64", "sex": "int64"})
    return json.loads(data.head(n).to_json(orient="records"))


def test_a_window_of_minutes_instead_of_predictions(client):
    assert client.post("/v1/models/diabetes:predict", json={"instances": diabetes_records(20)}).status_code == 200

    def logged() -> bool:  # the prediction log is written just after the answer
        return client.get("/v1/models/diabetes/monitoring?window=500").get_json()["versions"].get("1", {}).get("n") == 20

    wait_until(logged, timeout=10, message="20 predictions logged")
    by_time = client.get("/v1/models/diabetes/monitoring?minutes=5").get_json()
    assert by_time["versions"]["1"]["n"] == 20 and by_time["window"]["since"] and by_time["window"]["last_n"] is None
    both = client.get("/v1/models/diabetes/monitoring?minutes=5&window=100")
    assert both.status_code == 422 and both.get_json()["error"]["details"]["errors"][0]["field"] == "minutes"

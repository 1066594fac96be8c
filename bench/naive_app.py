"""The Flask app a user would write: load the joblib file, ``predict`` on a DataFrame, nothing else.

The bench's yardstick. It serves every model folder the bench packaged (version 1, the same
``model.joblib`` the project serves) at the project's URL, with no validation, no monitoring
and no error handling beyond Flask's own: ``gunicorn bench.naive_app:application``.
"""

import os
from pathlib import Path

import joblib
import pandas as pd
from flask import Flask, jsonify, request

ROOT = Path(os.environ.get("ARTIFACTS_DIR", "artifacts"))
MODELS = {path.parent.parent.name: joblib.load(path) for path in ROOT.glob("*/1/model.joblib")}
application = Flask(__name__)


@application.post("/v1/models/<name>:predict")
def predict(name: str):
    model = MODELS[name]
    body = request.get_json()
    frame = pd.DataFrame(body["instances"], columns=model.feature_names_in_)
    return jsonify({"predictions": model.predict(frame).tolist()})


@application.get("/readyz")
def ready():
    return jsonify({"status": "ready", "models": sorted(MODELS)})

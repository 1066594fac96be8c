"""The Flask app a user would write: load the joblib file, ``predict`` on a DataFrame, nothing else.

The bench's yardstick. It serves every model version the bench packaged or copied (the same
``model.joblib`` the project serves) at the project's URLs (version 1 without a version in the
path), with no validation, no monitoring and no error handling beyond Flask's own:
``gunicorn bench.naive_app:application``.
"""

import os
from pathlib import Path

import joblib
import pandas as pd
from flask import Flask, jsonify, request

ROOT = Path(os.environ.get("ARTIFACTS_DIR", "artifacts"))
MODELS = {(path.parent.parent.name, int(path.parent.name)): joblib.load(path) for path in ROOT.glob("*/*/model.joblib")
          if path.parent.name.isdigit()}
application = Flask(__name__)


@application.post("/v1/models/<name>:predict")
@application.post("/v1/models/<name>/versions/<int:version>:predict")
def predict(name: str, version: int = 1):
    model = MODELS[name, version]
    body = request.get_json()
    frame = pd.DataFrame(body["instances"], columns=model.feature_names_in_)
    return jsonify({"predictions": model.predict(frame).tolist()})


@application.get("/readyz")
def ready():
    return jsonify({"status": "ready", "models": sorted({name for name, _ in MODELS})})

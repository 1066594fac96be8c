"""The leanest Flask app a user writes: ``np.array(body["instances"])``, ``model.predict``, ``jsonify``.

The yardstick the issue's targets name. Unlike ``bench/naive_app.py`` it builds no DataFrame,
so it is what a thirty-line app costs per request: the same ``model.joblib`` files at the
project's URLs (version 1 without a version in the path), no validation, no monitoring, no error
handling beyond Flask's own: ``gunicorn bench.lean_app:application``. A model fitted on a
DataFrame warns that the array has no feature names; the warning is silenced here (once per
process, as a user who saw it would), so the app does not pay for printing it.
"""

import os
import warnings
from pathlib import Path

import joblib
import numpy as np
from flask import Flask, jsonify, request

warnings.filterwarnings("ignore", message="X does not have valid feature names")
ROOT = Path(os.environ.get("ARTIFACTS_DIR", "artifacts"))
MODELS = {(path.parent.parent.name, int(path.parent.name)): joblib.load(path) for path in ROOT.glob("*/*/model.joblib")
          if path.parent.name.isdigit()}
application = Flask(__name__)


@application.post("/v1/models/<name>:predict")
@application.post("/v1/models/<name>/versions/<int:version>:predict")
def predict(name: str, version: int = 1):
    model = MODELS[name, version]
    return jsonify({"predictions": model.predict(np.array(request.get_json()["instances"])).tolist()})


@application.get("/readyz")
def ready():
    return jsonify({"status": "ready", "models": sorted({name for name, _ in MODELS})})

"""The bare-stack floor: the same Gunicorn and Flask with no model, answering a constant.

It reads the request body (the server must receive it anyway) but neither parses nor
predicts, so its CPU per request is what HTTP, Gunicorn and Flask cost before any model work:
``gunicorn bench.floor_app:application``.
"""

from flask import Flask, jsonify, request

ANSWER = {"predictions": [0]}
application = Flask(__name__)


@application.post("/v1/models/<name>:predict")
@application.post("/v1/models/<name>/versions/<int:version>:predict")
def predict(name: str, version: int = 1):
    request.get_data()
    return jsonify(ANSWER)


@application.get("/readyz")
def ready():
    return jsonify({"status": "ready"})

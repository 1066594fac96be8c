"""The model card over HTTP, in-process: HTML in the monitoring page's style and CSP, Markdown on ?format=md."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service.models import registry
from service.models.packaging import Threshold, package_model

CARD_TEXT = """Intended use: pre-screening of small loans <script>alert(1)</script>.
Limitations: not validated for applicants under 21."""


def credit_frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.normal(40, 10, n).round(), "income": rng.lognormal(8, 0.4, n),
                          "sex": rng.choice(["f", "m"], n), "postcode": rng.choice(["a1", "b2", "c3"], n)})
    score = (frame["age"] - 40) / 10 + np.log(frame["income"]) - 8 + rng.normal(0, 0.5, n)
    return frame, pd.Series((score > 0).astype(int), name="approved")


def credit_model(final):
    prepare = ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["sex", "postcode"])])
    return make_pipeline(prepare, final)


def package_credit(root) -> pd.DataFrame:
    """Two versions of a small credit model: v1 linear, v2 a forest with a changelog; both with card text."""
    frame, y = credit_frame()
    overrides = {"sex": {"sensitive": True}, "postcode": {"pii": True, "description": "first part of the postcode"}}
    for final, changelog in ((LogisticRegression(), "first model"), (RandomForestClassifier(30, random_state=0),
                                                                       "a forest: better recall")):
        model = credit_model(final).fit(frame, y)
        manifest = package_model(model, "credit", root, frame, y, overrides=overrides, changelog=changelog,
                                 description="Approves small loans.", card=CARD_TEXT,
                                 thresholds=[Threshold("accuracy", "min", 0.7)])
        registry.record_packaged(root, manifest, actor="test")
    return frame


def traffic(app, client, frame: pd.DataFrame, version: int) -> None:
    """Predict every row with ``version`` and send feedback for all of them."""
    rows = frame.to_dict(orient="records")
    body = client.post(f"/v1/models/credit/versions/{version}:predict", json={"instances": rows}).get_json()
    app.extensions["observer"].flush()
    truth = credit_frame()[1].tolist()
    feedback = [{"id": pid, "label": truth[i]} for i, pid in enumerate(body["ids"])]
    assert client.post("/v1/models/credit/feedback", json={"feedback": feedback}).status_code == 200


@pytest.fixture
def credit_app(make_app, artifact_root):
    frame = package_credit(artifact_root)
    registry.set_label(artifact_root, "credit", "production", 2, actor="test")
    app = make_app()
    traffic(app, app.test_client(), frame, 2)
    return app


def test_card_html_has_every_section_under_the_monitoring_csp(credit_app):
    reply = credit_app.test_client().get("/v1/models/credit/versions/2/card")
    assert reply.status_code == 200 and reply.mimetype == "text/html"
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    html = reply.get_data(as_text=True)
    for heading in ("Intended use and limitations", "Input constraints", "Data", "Validation",
                    "Since deployment", "Bias by sensitive group", "Global feature importance",
                    "Changes since the parent version"):
        assert f">{heading}" in html, heading
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "Changelog: a forest: better recall" in html
    # packaged without training data: the hold-out is named as such, never as training data
    assert "<li>Training data: not recorded (packaged without --train or --reference)</li>" in html
    assert "<li>Hold-out (evaluation) data: sha256 <code>" in html
    assert "rows of the hold-out (evaluation) data</li>" in html
    assert "ColumnTransformer → LogisticRegression</code> became <code>ColumnTransformer → RandomForestClassifier" in html


def test_card_markdown_carries_the_figures(credit_app):
    reply = credit_app.test_client().get("/v1/models/credit/versions/2/card?format=md")
    assert reply.status_code == 200 and reply.mimetype == "text/markdown"
    text = reply.get_data(as_text=True)
    assert text.startswith("# Model card: credit version 2")
    assert "not validated for applicants under 21" in text
    assert "| postcode | category | yes | no | — | — | — | yes | no |" in text  # pii: categories withheld
    assert "| accuracy | >= 0.7 |" in text
    assert "400 logged predictions since" in text and "400 with feedback" in text
    assert "| sex | " in text  # bias by the sensitive feature
    assert "Mean absolute contribution to the probability (tree_shap)" in text
    assert "Parent: version 1. Changelog: a forest: better recall" in text
    assert "- Evaluation data: the same rows" in text
    assert "## Data\n\n- **Training data:** not recorded (packaged without --train or --reference)\n" in text
    assert "- **Hold-out (evaluation) data:** sha256 `" in text
    assert "rows of the hold-out (evaluation) data\n" in text
    assert "- Estimator: ColumnTransformer → LogisticRegression became ColumnTransformer → RandomForestClassifier" in text


def test_first_version_says_so(credit_app):
    text = credit_app.test_client().get("/v1/models/credit/versions/1/card?format=md").get_data(as_text=True)
    assert "_This is the first version._" in text and "0 logged predictions" in text


def test_card_errors(credit_app):
    client = credit_app.test_client()
    assert client.get("/v1/models/credit/versions/9/card").status_code == 404
    assert client.get("/v1/models/nope/versions/1/card").status_code == 404
    bad = client.get("/v1/models/credit/versions/1/card?format=pdf")
    assert bad.status_code == 422 and bad.get_json()["error"]["details"]["errors"][0]["field"] == "format"


def test_packaging_can_require_a_card(tmp_path):
    frame, y = credit_frame(100)
    model = credit_model(LogisticRegression()).fit(frame, y)
    with pytest.raises(ValueError, match="REQUIRE_MODEL_CARD"):
        package_model(model, "credit", tmp_path, frame, y, require_card=True)
    manifest = package_model(model, "credit", tmp_path, frame, y, require_card=True, card="Use: tests.")
    assert manifest["card"] == "Use: tests."

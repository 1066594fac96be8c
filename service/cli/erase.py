"""``erase``: delete what the prediction log holds about one person (the right to erasure).

Works on the database the server writes (``DATABASE_URL``), with the server's ``PII_HASH_KEY``
(or the key the store keeps when none is set), so it finds what any worker or replica logged.
Prints the count per table and writes one audit record that names the subject by its keyed
hash only.
"""

from __future__ import annotations

import json

import click

from service.cli.common import actor, fails_cleanly
from service.cli.monitoring import DATABASE
from service.config import Config
from service.models.artifacts import check_model_name
from service.security import audit as trail
from service.store import Store

#: What the audit record's target starts with (the HTTP endpoint writes the same).
TARGET = "subject:"


@click.command()
@click.option("--subject", required=True, help="The value of the model's subject feature (e.g. the customer id).")
@click.option("--model", default=None, help="Only this model's predictions (default: every model).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@DATABASE
@fails_cleanly
def erase(subject: str, model: str | None, as_json: bool, database_url: str) -> None:
    """Delete one person's logged predictions, feedback and batch rows; print the count per table."""
    from service.monitoring.predlog import PredictionLog

    if model is not None:
        check_model_name(model)
    store = Store.from_url(database_url)
    subject_hash, counts = PredictionLog(store, pii_key=Config.from_env().pii_hash_key).erase(subject, model)
    try:
        trail.record(store, actor(), "subject.erase", TARGET + subject_hash, {"model": model, "deleted": counts})
    except Exception as exc:  # the erasure is done; the operator must know it is unaudited
        click.echo(f"warning: not recorded in the audit trail: {type(exc).__name__}: {exc}", err=True)
    if as_json:
        click.echo(json.dumps({"subject_hash": subject_hash, "model": model, "deleted": counts}))
    else:
        click.echo(f"predictions: {counts['predictions']} deleted, feedback: {counts['feedback']} deleted, "
                   f"prediction_batches: {counts['prediction_batches_rewritten']} rewritten, "
                   f"{counts['prediction_batches_deleted']} deleted")


COMMANDS = (erase,)

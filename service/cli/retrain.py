"""``retrain``: a challenger from production feedback, judged against the champion, packaged when it wins.

A thin shell over ``service.retrain.run``. Exit 0 when the run finished, whether or not the
challenger won (stdout says which gate decided; ``--json`` prints the whole report), 3 when the
challenger lost and ``--fail-if-not-packaged`` asks a pipeline to notice, 1 with a one-line
reason when the run could not be made, 2 for a usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from service.cli.common import ARTIFACTS, MODEL, SIGNING_KEY, actor, fails_cleanly
from service.cli.monitoring import DATABASE

NOT_PACKAGED = 3


def _parsed(parse):
    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None):
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _since(value: str) -> float:
    from service.retrain.run import parse_duration

    return parse_duration(value)


def _share(value: str) -> float:
    from service.retrain.run import parse_share

    return parse_share(value)


def _then(value: str):
    from service.retrain.run import Rollout

    return Rollout.parse(value)


@click.command()
@MODEL
@click.option("--train", "train", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Base training data (CSV or Parquet) with the model's features and the target column.")
@click.option("--target", default="target", show_default=True, help="The target column of --train.")
@click.option("--since", "since_seconds", default="30d", show_default=True, callback=_parsed(_since),
              help="Production rows predicted within this long (30d, 12h, 45m).")
@click.option("--holdout-last", "holdout_share", default="20%", show_default=True, callback=_parsed(_share),
              help="Newest share of the labelled production rows kept as the judge (a time split).")
@click.option("--min-gain", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="How much the challenger must beat the champion by on the primary metric.")
@click.option("--metric", default=None, help="Primary metric (default: the champion's first quality-gate metric).")
@click.option("--max-rows", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Row cap for the base file and for the production rows (the newest are kept).")
@click.option("--min-holdout-rows", type=click.IntRange(min=1), default=30, show_default=True,
              help="Fewest labelled hold-out rows a verdict needs.")
@click.option("--bootstrap", type=click.IntRange(min=100, max=100_000), default=1000, show_default=True,
              help="Bootstrap resamples behind each confidence interval (seeded).")
@click.option("--keep-failed", is_flag=True, help="Package the challenger even when it loses (never rolled out).")
@click.option("--then", "then", default=None, callback=_parsed(_then), metavar="shadow|canary:W",
              help="Start the packaged challenger as a shadow, or as a canary at W percent.")
@click.option("--reason", default="", help="Changelog of the new version (default: the verdict).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fail-if-not-packaged", is_flag=True, help=f"Exit {NOT_PACKAGED} when no challenger was packaged.")
@click.option("--on-alert", "on_alert", default=None, hidden=True,
              help="Run for this firing alert rule: act as alert:RULE and notify the outcome through ALERT_WEBHOOK_URL.")
@ARTIFACTS
@SIGNING_KEY
@DATABASE
@fails_cleanly
def retrain(name: str, train: Path, target: str, since_seconds: float, holdout_share: float, min_gain: float,
            metric: str | None, max_rows: int, min_holdout_rows: int, bootstrap: int, keep_failed: bool, then,
            reason: str, as_json: bool, fail_if_not_packaged: bool, on_alert: str | None, artifacts_dir: Path,
            signing_key, database_url: str) -> None:
    """Fit a challenger for NAME's production version on --train plus the labelled production rows,
    judge both on the newest labelled rows, and package it (with --then, roll it out) when it wins."""
    from service.retrain import report as text
    from service.retrain.run import Request, Services
    from service.retrain.run import retrain as run
    from service.store import Store

    request = Request(name, train, target, since_seconds, holdout_share, min_gain, metric, max_rows, min_holdout_rows,
                      bootstrap, keep_failed, then, reason or (f"alert {on_alert} fired" if on_alert else ""))
    services = Services(artifacts_dir, Store.from_url(database_url), signing_key,
                        f"alert:{on_alert}" if on_alert else actor())
    try:
        result = run(request, services)
    except Exception as exc:
        if on_alert:
            _notify(on_alert, name, f"retrain failed: {exc}", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    if on_alert:
        _notify(on_alert, name, text.outcome(result), {
            "champion": result["champion"], "challenger": result["challenger"], "packaged": result["packaged"],
            "decided_by": result["comparison"]["decided_by"], "reason": result["comparison"]["reason"],
            "rollout": result["rollout"]})
    click.echo(json.dumps(result, indent=2) if as_json else text.text(result), nl=as_json)
    if not result["packaged"]:
        click.echo(text.outcome(result), err=True)
        if fail_if_not_packaged:
            sys.exit(NOT_PACKAGED)


def _notify(rule: str, model: str, outcome: str, details: dict) -> None:
    """Tell the alert webhook (and the log) what a rule's retrain produced; a human decides what next."""
    import time

    from service.config import Config
    from service.monitoring.notify import Notification, Notifier

    notifier = Notifier(Config.from_env().alert_webhook_url)
    notifier.send(Notification("retrain", model, details.get("champion") or 0, rule, outcome,
                               details.get("challenger"), None, time.time(), details))
    notifier.flush(15)
    notifier.close()


COMMANDS = (retrain,)

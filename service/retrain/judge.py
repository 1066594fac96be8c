"""Champion against challenger on rows neither has seen: the figures side by side and the gates.

Both versions are scored on the same hold-out rows (the newest labelled production rows) with
the packaging metrics (``service.models.evaluation.evaluate``); each figure gets a percentile
bootstrap confidence interval, and the gain on the primary metric a paired one (the same
resampled rows for both), from a seeded generator so a report is reproducible. The gates run in
a fixed order and every one is reported; the first that fails decides. Pure numpy and
scikit-learn; no I/O, no Flask.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from service.models.evaluation import evaluate, model_input
from service.models.packaging import Threshold
from service.monitoring.bias import bias_report
from service.monitoring.quality import window_quality
from service.retrain import scores

#: Metrics where a smaller value is better; every other one is better larger.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
SEED = 0
GATES = ("data", "gain", "packaging", "fairness", "data_quality")


@dataclass(frozen=True)
class Settings:
    """How the challenger is judged."""

    metric: str
    min_gain: float = 0.0
    min_holdout_rows: int = 30
    bootstrap: int = 1000
    confidence: float = 0.95


@dataclass
class Verdict:
    """What the comparison found: figures side by side, each gate's outcome, and which one decided."""

    metric: str
    rows: int
    champion: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> value, low, high
    challenger: dict[str, dict[str, float]] = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)  # value, low, high (positive: challenger better)
    gates: list[dict[str, Any]] = field(default_factory=list)  # name, passed, reason

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g["passed"] for g in self.gates)

    @property
    def decided_by(self) -> dict[str, Any]:
        """The first failed gate, or the gain gate when every gate passed (the one a winner is chosen by)."""
        failed = [g for g in self.gates if not g["passed"]]
        return failed[0] if failed else next(g for g in self.gates if g["name"] == "gain")

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "holdout_rows": self.rows, "champion": self.champion,
                "challenger": self.challenger, "gain": self.gain, "gates": self.gates, "passed": self.passed,
                "decided_by": self.decided_by["name"], "reason": self.decided_by["reason"]}


def primary_metric(manifest: dict[str, Any], task: str) -> str:
    """The metric a version is judged on: its first quality-gate metric, else accuracy or RMSE."""
    for rule in (manifest.get("metrics") or {}).get("thresholds") or []:
        metric = str(rule.get("metric", ""))
        if metric and not metric.startswith("cv."):
            return metric
    return "rmse" if task == "regression" else "accuracy"


def compare(champion: Any, challenger: Any, X: pd.DataFrame, y: pd.Series, task: str, settings: Settings, *,
            features: list[dict[str, Any]], thresholds: list[Threshold], champion_profile: dict[str, Any],
            challenger_profile: dict[str, Any]) -> Verdict:
    """Score both on ``X, y`` and run the gates in order; every gate is reported."""
    verdict = Verdict(settings.metric, len(X))
    if len(X) < settings.min_holdout_rows:
        verdict.gates.append(_gate("data", False, f"only {len(X)} labelled hold-out rows, "
                                                  f"{settings.min_holdout_rows} needed (--min-holdout-rows)"))
        return verdict
    verdict.gates.append(_gate("data", True, f"{len(X)} labelled hold-out rows"))
    classes = _classes(champion, task)
    ours, theirs = _outputs(champion, X, task), _outputs(challenger, X, task)
    ours_samples = _bootstrap(ours, y, task, settings, classes)
    theirs_samples = _bootstrap(theirs, y, task, settings, classes)
    verdict.champion = evaluate_with_intervals(champion, X, y, task, ours_samples, settings)
    verdict.challenger = evaluate_with_intervals(challenger, X, y, task, theirs_samples, settings)
    if settings.metric not in verdict.challenger or settings.metric not in verdict.champion:
        raise ValueError(f"metric {settings.metric!r} cannot be measured on these rows; measured: "
                         f"{', '.join(verdict.challenger)}")
    verdict.gain = _paired_gain(ours_samples, theirs_samples, (verdict.champion[settings.metric]["value"],
                                verdict.challenger[settings.metric]["value"]), settings)
    sign = "+" if verdict.gain["value"] >= 0 else ""
    text = (f"{settings.metric} {sign}{verdict.gain['value']:.4f} (CI {verdict.gain['low']:+.4f} .. "
            f"{verdict.gain['high']:+.4f}), --min-gain {settings.min_gain:g}")
    wins = verdict.gain["value"] >= settings.min_gain and verdict.gain["value"] > 0 and verdict.gain["low"] > 0
    verdict.gates.append(_gate("gain", wins, ("challenger better: " if wins else "challenger not better: ") + text))
    measured = {m: v["value"] for m, v in verdict.challenger.items()}
    verdict.gates.append(_packaging(measured, thresholds))
    verdict.gates.append(_fairness(features, X, y, ours["predicted"], theirs["predicted"], task, classes))
    verdict.gates.append(_quality(features, X, champion_profile, challenger_profile))
    return verdict


def evaluate_with_intervals(model: Any, X: pd.DataFrame, y: pd.Series, task: str, samples: list[dict[str, float]],
                            settings: Settings) -> dict[str, dict[str, float]]:
    """Every packaging metric with its bootstrap interval: ``{metric: {value, low, high}}``."""
    result = {}
    with warnings.catch_warnings():
        # a hold-out of one class (a quiet week) is a fact the report states, not a warning to print
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        point = evaluate(model, X, y, task)
    for metric, value in point.items():
        low, high = _interval([s[metric] for s in samples if metric in s], settings)
        result[metric] = {"value": float(value), "low": low, "high": high}
    return result


def _interval(values: list[float], settings: Settings) -> tuple[float, float]:
    tail = (1 - settings.confidence) / 2 * 100
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(np.asarray(values), [tail, 100 - tail])
    return float(low), float(high)


def _outputs(model: Any, X: pd.DataFrame, task: str) -> dict[str, Any]:
    data = model_input(model, X)
    proba = model.predict_proba(data) if task == "classification" and hasattr(model, "predict_proba") else None
    return {"predicted": np.asarray(model.predict(data)), "proba": proba}


def _classes(model: Any, task: str) -> list[Any] | None:
    return list(model.classes_) if task == "classification" else None


def _bootstrap(outputs: dict[str, Any], y: pd.Series, task: str, settings: Settings,
               classes: list[Any] | None) -> list[dict[str, float]]:
    """Score the outputs on ``settings.bootstrap`` resamples of the rows: the same resamples every call,
    so two models' lists pair up row for row."""
    truth, proba = y.to_numpy(), outputs["proba"]
    picks = np.random.default_rng(SEED).integers(0, len(truth), size=(settings.bootstrap, len(truth)))
    return [scores.score(truth[rows], outputs["predicted"][rows], None if proba is None else proba[rows], task, classes)
            for rows in picks]


def _paired_gain(ours: list[dict[str, float]], theirs: list[dict[str, float]], point: tuple[float, float],
                 settings: Settings) -> dict[str, float]:
    """The challenger's gain on the primary metric, its interval from the same resampled rows for both."""
    metric = settings.metric
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    gains = [sign * (b[metric] - a[metric]) for a, b in zip(ours, theirs, strict=True) if metric in a and metric in b]
    low, high = _interval(gains, settings)
    return {"value": sign * (point[1] - point[0]), "low": low, "high": high}


def _packaging(measured: dict[str, float], thresholds: list[Threshold]) -> dict[str, Any]:
    """The champion's quality gate, as ``package`` applies it: a metric the hold-out cannot measure fails."""
    problems = []
    for t in thresholds:
        if t.metric.startswith("cv."):
            continue  # cross-validation is no part of a retrain: the hold-out decides
        if t.metric not in measured:
            problems.append(f"{t.metric} cannot be measured on the hold-out (e.g. one class only)")
        elif not t.passes(measured[t.metric]):
            problems.append(f"{t.metric} = {measured[t.metric]:.4f}, required {'>=' if t.kind == 'min' else '<='} {t.value:g}")
    return _gate("packaging", not problems, "; ".join(problems) or f"{len(thresholds)} quality-gate threshold(s) met")


def _fairness(features: list[dict[str, Any]], X: pd.DataFrame, y: pd.Series, ours: np.ndarray, theirs: np.ndarray,
              task: str, classes: list[Any] | None) -> dict[str, Any]:
    """The challenger may not alert on a sensitive feature where the champion does not."""
    if not any(f.get("sensitive") for f in features):
        return _gate("fairness", True, "no sensitive features in the schema")
    columns = {f["name"]: X[f["name"]].to_numpy() for f in features if f.get("sensitive")}
    labels = y.to_numpy(dtype=object)
    before = bias_report(features, columns, ours, labels, task, classes)["features"]
    after = bias_report(features, columns, theirs, labels, task, classes)["features"]
    worse = [name for name, report in after.items()
             if report["status"] == "alert" and before.get(name, {}).get("status") != "alert"]
    return _gate("fairness", not worse, f"new bias alert on {', '.join(worse)}" if worse else
                 f"no new bias alert on {', '.join(after)}")


def _quality(features: list[dict[str, Any]], X: pd.DataFrame, champion_profile: dict[str, Any],
             challenger_profile: dict[str, Any]) -> dict[str, Any]:
    """The hold-out rows may not fail a data-quality check against the challenger's reference that
    they pass against the champion's."""
    columns = {f["name"]: X[f["name"]].to_numpy() for f in features}
    before = window_quality(champion_profile, features, columns)["features"]
    after = window_quality(challenger_profile, features, columns)["features"]
    worse = [name for name, report in after.items()
             if report["status"] == "alert" and before.get(name, {}).get("status") != "alert"]
    return _gate("data_quality", not worse, f"new data-quality alert on {', '.join(worse)}" if worse else
                 "no new data-quality alert")


def _gate(name: str, passed: bool, reason: str) -> dict[str, Any]:
    return {"name": name, "passed": passed, "reason": reason}

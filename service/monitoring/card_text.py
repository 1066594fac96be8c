"""A model card (``service.monitoring.card.build_card``) as Markdown, for ``?format=md`` and the CLI."""

from __future__ import annotations

from typing import Any

NONE = "—"
NOT_RECORDED = "not recorded (packaged without --train or --reference)"


def markdown(card: dict[str, Any]) -> str:
    """Render the card as GitHub-flavoured Markdown."""
    about = card["about"]
    lines = [f"# Model card: {card['model']} version {card['version']}", ""]
    lines += [f"- **Task:** {about.get('task')}; **estimator:** {about.get('structure')} (`{about.get('estimator')}`)",
              f"- **Packaged:** {about.get('created_at')} by {about.get('created_by')}",
              f"- **Served by:** {_serving(about.get('serving') or {})}",
              f"- **Labels:** {', '.join(card['labels']) or NONE}; **deployed:** {card['deployed_at'] or 'never labelled'}",
              f"- **Description:** {about.get('description') or NONE}", ""]
    lines += ["## Intended use and limitations", "",
              card["intended_use"] or "_No card text was given at packaging (`python -m service package --card card.md`)._",
              ""]
    lines += ["## Input constraints", "", *_table(["feature", "type", "required", "nullable", "min", "max", "categories",
                                                     "pii", "sensitive"],
                                                    [[f["name"], f["type"], f["required"], f["nullable"], f["min"], f["max"],
                                                      _list(f["categories"]), f["pii"], f["sensitive"]]
                                                     for f in card["inputs"]]), ""]
    lines += _data(card["data"]) + _validation(card["validation"]) + _live(card["live"]) + _bias(card["bias"])
    lines += _importance(card["importance"]) + _changes(card["changes"]) + _lineage(card.get("retrain"))
    return "\n".join(lines).rstrip() + "\n"


def _serving(serving: dict[str, Any]) -> str:
    """The backend and its largest measured deviation from scikit-learn; why not ONNX, when it is not."""
    text = f"{serving.get('backend', NONE)}, largest deviation from scikit-learn {_num(serving.get('max_abs_diff'))}"
    onnx = serving.get("onnx") or {}
    if serving.get("backend") != "onnx" and onnx.get("reason"):
        text += f" (ONNX {onnx.get('status')}: {onnx['reason']})"
    elif serving.get("backend") != "onnx" and onnx.get("status") == "ok" and not onnx.get("exact"):
        text += " (ONNX: packaged before exact parity was measured)"
    return text


def _data(data: dict[str, Any]) -> list[str]:
    evaluation = data.get("evaluation") or {}
    source = f"{evaluation['source']}, " if evaluation.get("source") else ""
    return ["## Data", "",
            f"- **Training data:** {_pairs(data.get('training') or {}) or NOT_RECORDED}",
            f"- **Hold-out (evaluation) data:** {source}sha256 `{evaluation.get('sha256', NONE)}`, "
            f"{evaluation.get('rows', NONE)} rows",
            f"- **Drift reference profile:** {data.get('reference_rows') or NONE} rows of the "
            f"{data.get('reference_of') or NONE}", ""]


def _validation(validation: dict[str, Any]) -> list[str]:
    lines = ["## Validation", "", f"Hold-out ({validation.get('holdout_rows') or NONE} rows):", ""]
    lines += _table(["metric", "value"], [[k, _num(v)] for k, v in validation["holdout"].items()])
    cv = validation.get("cv") or {}
    if cv:
        lines += ["", f"Cross-validation: {_pairs(cv)}"]
    lines += ["", "Quality gate:", ""]
    if validation["gate"]:
        lines += _table(["metric", "rule", "measured", "passed"],
                        [[g["metric"], g["rule"], _num(g["measured"]), g["passed"]] for g in validation["gate"]])
    else:
        lines.append("_No gate was set at packaging._")
    return lines + [""]


def _live(live: dict[str, Any]) -> list[str]:
    lines = ["## Since deployment", "",
             f"{live['predictions']} logged predictions since {live['since'] or NONE}; {live['labelled']} with feedback "
             f"(performance status: {live['status'] or NONE}).", ""]
    if live["metrics"]:
        lines += _table(["metric", "live", "validation"],
                        [[k, _num(v), _num(live["reference"].get(k))] for k, v in live["metrics"].items()]) + [""]
    lines.append(f"Drift: {live['drift_status'] or NONE}; prediction PSI {_num(live['prediction_drift'])}.")
    if live["drift"]:
        lines += ["", *_table(["feature", "status", "psi"], [[d["feature"], d["status"], _num(d["psi"])]
                                                               for d in live["drift"]])]
    return lines + [""]


def _bias(bias: dict[str, Any]) -> list[str]:
    features = bias.get("features") or {}
    lines = ["## Bias by sensitive group", ""]
    if not features:
        return lines + ["_No feature is flagged `sensitive` in the schema, or no prediction was logged yet._", ""]
    rows = []
    for name, entry in features.items():
        groups = ", ".join(f"{g}: {s.get('count', 0)}" for g, s in (entry.get("groups") or {}).items())
        rows.append([name, entry.get("status"), _num(entry.get("demographic_parity_difference")),
                     _num(entry.get("equal_opportunity_difference")), groups or NONE])
    return lines + _table(["feature", "status", "parity gap", "opportunity gap", "groups (rows)"], rows) + [""]


def _importance(found: dict[str, Any]) -> list[str]:
    lines = ["## Global feature importance", ""]
    if not found.get("available"):
        return lines + [f"_Not available: {found.get('reason')}._", ""]
    lines += [f"Mean absolute contribution to the {found['output'].replace('_', '-')} ({found['method']}) over "
              f"{found['rows']} reference rows:", ""]
    return lines + _table(["feature", "mean absolute contribution"], [[k, _num(v)] for k, v in found["features"].items()]) + [""]


def _changes(changes: dict[str, Any]) -> list[str]:
    lines = ["## Changes since the parent version", ""]
    if changes.get("parent") is None:
        return lines + ["_This is the first version._", ""]
    lines.append(f"Parent: version {changes['parent']}. Changelog: {changes.get('changelog') or NONE}")
    if not changes.get("available"):
        return lines + ["", "_The parent's manifest is no longer on disk._", ""]
    if changes.get("estimator"):
        lines.append(f"- Estimator: {changes['estimator']['parent']} became {changes['estimator']['this']}")
    for key, text in (("features_added", "Features added"), ("features_removed", "Features removed")):
        if changes[key]:
            lines.append(f"- {text}: {', '.join(changes[key])}")
    for entry in changes["features_changed"]:
        lines.append(f"- Feature {entry['feature']}: {', '.join(entry['fields'])} changed")
    lines.append(f"- Evaluation data: {'changed' if changes['evaluation_data_changed'] else 'the same rows'}")
    if changes["metrics"]:
        lines += ["", *_table(["metric", "parent", "this", "delta"],
                              [[k, _num(v["parent"]), _num(v["this"]), _num(v["delta"], signed=True)]
                               for k, v in changes["metrics"].items()])]
    return lines + [""]


def _lineage(retrain: dict[str, Any] | None) -> list[str]:
    """Where a version retrained from production feedback came from (``service.retrain``)."""
    if not retrain:
        return []
    comparison, window = retrain.get("comparison") or {}, retrain.get("window") or {}
    base, rows, held = retrain.get("base_data") or {}, retrain.get("production_rows") or {}, retrain.get("holdout_rows") or {}
    gain = comparison.get("gain") or {}
    lines = ["## Retrained from production feedback", "",
             f"- **Retrained from version** {retrain.get('parent_version')}"
             f"{' (packaged although it failed, --keep-failed)' if retrain.get('kept_failed') else ''}",
             f"- **Base data:** {base.get('source', NONE)}, {base.get('rows', NONE)} rows, sha256 `{base.get('sha256', NONE)}`",
             f"- **Production rows learned from:** {rows.get('rows', NONE)} rows, sha256 `{rows.get('sha256', NONE)}`, "
             f"prediction ids sha256 `{rows.get('ids_sha256', NONE)}`",
             f"- **Judged on:** the newest {held.get('rows', NONE)} labelled rows, sha256 `{held.get('sha256', NONE)}`",
             f"- **Window:** predictions from unix time {_num(window.get('since'))} to {_num(window.get('until'))}",
             f"- **Verdict:** {'passed' if comparison.get('passed') else 'failed'}, decided by the "
             f"{comparison.get('decided_by', NONE)} gate: {comparison.get('reason', NONE)}", ""]
    champion, challenger = comparison.get("champion") or {}, comparison.get("challenger") or {}
    table = [[m, _num(champion[m]["value"]), _num(v["value"]), f"[{_num(v['low'])}, {_num(v['high'])}]"]
             for m, v in challenger.items() if m in champion]
    if table:
        lines += _table(["metric", "parent", "this", "this, 95% interval"], table)
        lines += ["", f"Gain on {comparison.get('metric')}: {_num(gain.get('value'), signed=True)} "
                      f"[{_num(gain.get('low'), signed=True)}, {_num(gain.get('high'), signed=True)}]", ""]
    return lines


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _cell(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(value: Any, signed: bool = False) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return NONE if value is None else str(value)
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _list(values: Any) -> str | None:
    return None if not values else ", ".join(map(str, values))


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in mapping.items()
                     if not isinstance(v, list | dict))

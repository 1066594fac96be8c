"""``rollout``, ``promote``, ``rollback`` and ``gc``: safe rollout from the command line.

A thin shell over ``service.models.registry`` working on the artifact root directly (for CI/CD
pipelines); a running server follows the change on its next poll. ``service.cli`` adds these
commands to its group.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from service.cli.common import ARTIFACTS, MODEL, SIGNING_KEY, actor, fails_cleanly
from service.models import registry

REASON = click.option("--reason", required=True, help="Why; recorded in the history.")


def _moves_production(command: Callable[..., None]) -> click.Command:
    """Make a command that moves NAME's production label: NAME, --reason, the artifact root, the signing key."""
    for decorate in (fails_cleanly, SIGNING_KEY, ARTIFACTS, REASON, MODEL, click.command()):
        command = decorate(command)
    return command


class OptionalNumber(click.ParamType):
    """A number, or ``off`` for a rule that is switched off (null in registry.json)."""

    name = "number|off"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or (isinstance(value, str) and value.lower() == "off"):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a number nor 'off'", param, ctx)


@click.group()
def rollout() -> None:
    """Show and change a model's rollout: canary, shadow, fallback, time budget, rules."""


@rollout.command("show")
@MODEL
@ARTIFACTS
@fails_cleanly
def rollout_show(name: str, artifacts_dir: Path) -> None:
    """Print the labels, rollout and rollback targets of NAME as JSON."""
    state = registry.read_state(artifacts_dir, name)
    click.echo(json.dumps({"model": name, "labels": state["labels"], "rollout": state["rollout"],
                           "production_stack": state["production_stack"]}, indent=2))


@rollout.command("set")
@MODEL
@click.option("--canary", type=int, help="Version to send a share of unqualified traffic to (needs --weight).")
@click.option("--weight", type=float, help="Canary share in percent, 0-100 (alone: change the current canary's).")
@click.option("--end-canary", is_flag=True, help="Stop the canary; production answers everything.")
@click.option("--shadow", type=int, multiple=True, help="Version that gets a copy of the traffic (repeatable).")
@click.option("--no-shadow", is_flag=True, help="Remove every shadow version.")
@click.option("--fallback", type=int, help="Version that answers when the chosen one fails or is too slow.")
@click.option("--no-fallback", is_flag=True, help="Fall back to production.")
@click.option("--budget-ms", type=float, help="Time budget per request in milliseconds.")
@click.option("--no-budget", is_flag=True, help="Remove the time budget.")
@click.option("--max-error-rate", type=OptionalNumber(), help="Roll the canary back above this error rate (0-1, or off).")
@click.option("--max-p99-ms", type=OptionalNumber(), help="Roll the canary back above this p99 latency (ms, or off).")
@click.option("--min-live-accuracy", type=OptionalNumber(),
              help="Roll the canary back when its accuracy from feedback falls below this (0-1, or off).")
@click.option("--max-live-rmse", type=OptionalNumber(),
              help="Roll the canary back when its RMSE from feedback rises above this (or off).")
@click.option("--max-prediction-psi", type=OptionalNumber(),
              help="Roll the canary back when its predictions drift past this PSI (or off).")
@click.option("--window-seconds", type=float, help="Window the rules are evaluated over.")
@click.option("--min-requests", type=int, help="Requests a window needs before the rules apply.")
@REASON
@ARTIFACTS
@SIGNING_KEY
@fails_cleanly
def rollout_set(name: str, canary: int | None, weight: float | None, end_canary: bool, shadow: tuple[int, ...],
                no_shadow: bool, fallback: int | None, no_fallback: bool, budget_ms: float | None, no_budget: bool,
                reason: str, artifacts_dir: Path, signing_key: str | None, **rules: Any) -> None:
    """Change the parts of NAME's rollout that are given; the rest stays as it is."""
    changes: dict[str, Any] = {}
    if end_canary:
        _exclusive("--end-canary", canary is not None or weight is not None, "--canary/--weight")
        changes["canary"] = None
    elif canary is not None or weight is not None:
        changes["canary"] = _canary(artifacts_dir, name, canary, weight)
    if shadow or no_shadow:
        _exclusive("--no-shadow", no_shadow and bool(shadow), "--shadow")
        changes["shadow"] = list(shadow)
    if fallback is not None or no_fallback:
        _exclusive("--no-fallback", no_fallback and fallback is not None, "--fallback")
        changes["fallback"] = fallback
    if budget_ms is not None or no_budget:
        _exclusive("--no-budget", no_budget and budget_ms is not None, "--budget-ms")
        changes["budget_ms"] = budget_ms
    # click passes every rule option; only those on the command line change (off is null)
    given = {key: value for key, value in rules.items() if _on_command_line(key)}
    if given:
        changes["rules"] = given
    if not changes:
        raise click.UsageError("nothing to change: give --canary/--weight, --end-canary, --shadow, --fallback, "
                               "--budget-ms or a rule option")
    entry = registry.set_rollout(artifacts_dir, name, **changes, actor=actor(), reason=reason, signing_key=signing_key)
    click.echo(f"{name}: {describe(entry['after'])}")


@_moves_production
def promote(name: str, reason: str, artifacts_dir: Path, signing_key: str | None) -> None:
    """Make NAME's canary version production and end the canary."""
    entry = registry.promote(artifacts_dir, name, actor=actor(), reason=reason, signing_key=signing_key)
    click.echo(f"{name}: production -> {entry['to']} (was {entry['from']}); canary ended")


@_moves_production
def rollback(name: str, reason: str, artifacts_dir: Path, signing_key: str | None) -> None:
    """Point NAME's production back at the previous production version and end any canary."""
    entry = registry.rollback(artifacts_dir, name, actor=actor(), reason=reason, signing_key=signing_key)
    ended = entry.get("canary_ended")
    tail = f"; canary {ended['version']} at {ended['weight']:g}% ended" if ended else ""
    click.echo(f"{name}: production -> {entry['to']} (was {entry['from']}){tail}")


@click.command()
@MODEL
@click.option("--keep", type=click.IntRange(min=1), required=True, help="How many of the newest versions to keep.")
@click.option("--dry-run", is_flag=True, help="Only print what would be deleted.")
@click.option("--reason", default="", help="Why; recorded in the history.")
@ARTIFACTS
@fails_cleanly
def gc(name: str, keep: int, dry_run: bool, reason: str, artifacts_dir: Path) -> None:
    """Delete NAME's old versions, except labelled, in-rollout and rollback-target ones."""
    deleted = registry.gc(artifacts_dir, name, keep=keep, actor=actor(), reason=reason, dry_run=dry_run)
    if not deleted:
        click.echo(f"{name}: nothing to delete")
    else:
        click.echo(f"{name}: {'would delete' if dry_run else 'deleted'} versions {', '.join(map(str, deleted))}")


COMMANDS = (rollout, promote, rollback, gc)


def describe(state: dict[str, Any]) -> str:
    """Summarise a rollout on one line."""
    canary = state["canary"]
    parts = [
        f"canary {canary['version']} at {canary['weight']:g}%" if canary else "no canary",
        f"shadow {', '.join(map(str, state['shadow']))}" if state["shadow"] else "no shadow",
        f"fallback {state['fallback']}" if state["fallback"] is not None else "fallback production",
        f"budget {state['budget_ms']:g} ms" if state["budget_ms"] is not None else "no budget",
    ]
    return "; ".join(parts)


def _canary(root: Path, name: str, version: int | None, weight: float | None) -> dict[str, Any]:
    if weight is None:
        raise click.UsageError("--canary needs --weight (the share of traffic in percent)")
    if version is None:  # a new weight for the canary already running
        current = registry.read_state(root, name)["rollout"]["canary"]
        if current is None:
            raise ValueError(f"model {name!r} has no canary; give --canary with --weight")
        version = current["version"]
    return {"version": version, "weight": weight}


def _exclusive(flag: str, clash: bool, other: str) -> None:
    # a command line that contradicts itself is a usage error (exit 2), not a refusal of the change (1)
    if clash:
        raise click.UsageError(f"{flag} cannot be combined with {other}")


def _on_command_line(param: str) -> bool:
    return click.get_current_context().get_parameter_source(param) is ParameterSource.COMMANDLINE

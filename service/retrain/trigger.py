"""An alert rule's ``retrain`` action: start ``python -m service retrain`` in a process of its own.

Called by the alert loop (``AlertManager.on_action``) once when a rule with ``action =
"retrain"`` starts firing for a model's production version, in the one worker that evaluates
alerts (a canary has the automatic rollback for that). Fitting a model inside a
serving worker would take its CPU and memory from requests, so the run is a separate process in
its own session: the worker only starts it and reaps it on a daemon thread. The run acts as
``alert:<rule>`` in the audit trail and notifies its outcome through the alert webhook
(``--on-alert``). It packages and may start a shadow or a canary as the rule says; it never
promotes. Imports nothing heavy; no Flask.
"""

from __future__ import annotations

import logging
import os
import subprocess  # nosec B404  # noqa: S404  starts our own command line with an argument list, no shell
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Rule option -> command-line option of ``retrain``.
OPTIONS = {"target": "--target", "since": "--since", "holdout_last": "--holdout-last", "min_gain": "--min-gain",
           "then": "--then"}


def command(model: str, rule: str, options: dict[str, Any]) -> list[str]:
    """The ``retrain`` command line a firing rule runs."""
    args = [sys.executable, "-m", "service", "retrain", model, "--train", str(options["train"]), "--on-alert", rule]
    for key, flag in OPTIONS.items():
        if key in options:
            args += [flag, str(options[key])]
    return args


def launcher(artifacts_dir: Any, database_url: str) -> Callable[[Any, Any], None]:
    """Return the ``on_action`` callback that starts a retrain for a firing rule's model."""

    def launch(rule: Any, transition: Any) -> None:
        from service.models import registry

        production = registry.read_state(artifacts_dir, transition.model)["labels"].get(registry.PRODUCTION)
        if transition.version != production:  # a canary has its own guard; a retrain replaces production
            log.info("alert %s fired for %s version %s, not production: no retrain", rule.name, transition.model,
                     transition.version, extra={"rule": rule.name, "model": transition.model})
            return
        args = command(transition.model, rule.name, dict(rule.retrain))
        env = {**os.environ, "ARTIFACTS_DIR": str(artifacts_dir), "DATABASE_URL": database_url}
        # stdout to the server's log (stderr): the report is read there; own session: a worker's
        # graceful stop does not interrupt a run half way through packaging
        process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr,  # nosec B603  # noqa: S603  our own command, argument list, no shell
                                   start_new_session=True)
        log.warning("alert %s fired: retraining %s (process %s)", rule.name, transition.model, process.pid,
                    extra={"rule": rule.name, "model": transition.model, "pid": process.pid, "action": "retrain"})
        threading.Thread(target=process.wait, name=f"retrain-{process.pid}", daemon=True).start()

    return launch

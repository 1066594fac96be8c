"""A run's state file: what it scores with and how far it got, kept beside the output.

``<OUTPUT>.score-state.json`` is rewritten atomically after each chunk's parts are on disk
(they wait in ``<OUTPUT>.parts/``); both are removed when the run finishes. ``--resume`` reads
it back and continues only a run that would be the same one: the same input (by SHA-256), the
same options that decide where chunks begin and what a row of output holds, and the same model
version, since an output scored by two versions would be a lie about both. No Flask.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from service.files import write_json_atomic

STATE_SUFFIX = ".score-state.json"
PARTS_SUFFIX = ".parts"
FORMAT = 2  # 2: a Parquet output's parts hold row positions, not ids (scoring.output_table)
#: What a resumed run must repeat, with how to say it when it does not.
SAME = {"input_sha256": "the input file changed", "input_format": "--input-format differs",
        "output_format": "--output-format differs", "chunk_rows": "--chunk-rows differs",
        "keep": "--keep differs", "probabilities": "--probabilities differs"}


@dataclass
class RunState:
    run_id: str  # also the base of the run's prediction ids
    model: str
    version: int
    label: str | None  # the label the version was resolved by; None when pinned
    input: str
    input_sha256: str
    input_format: str
    output_format: str
    chunk_rows: int
    keep: list[str]
    probabilities: bool
    started: float
    chunks_done: int = 0
    rows_done: int = 0
    scored: int = 0
    rejected: int = 0
    format: int = FORMAT


def paths(output: Path) -> tuple[Path, Path]:
    """The state file and the parts folder of a run writing ``output``."""
    return output.with_name(output.name + STATE_SUFFIX), output.with_name(output.name + PARTS_SUFFIX)


def read(path: Path) -> RunState:
    """Read a state file; raise ``ValueError`` when it is not one this version writes."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the state file {path.name}: {exc}") from None
    known = {f.name for f in fields(RunState)}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not known >= set(data):
        raise ValueError(f"{path.name} is not a state file of this version of the score command")
    try:
        return RunState(**data)
    except TypeError as exc:
        raise ValueError(f"{path.name} is incomplete: {exc}") from None


def write(path: Path, state: RunState) -> None:
    """Write the state atomically: a run killed meanwhile leaves the previous state whole."""
    write_json_atomic(path, asdict(state))


def differences(saved: RunState, wanted: RunState) -> list[str]:
    """Why ``wanted`` is not a continuation of ``saved`` (empty when it is)."""
    found = [why for name, why in SAME.items() if getattr(saved, name) != getattr(wanted, name)]
    if saved.model != wanted.model:
        found.append(f"the interrupted run scored model {saved.model!r}, not {wanted.model!r}")
    elif saved.version != wanted.version:
        now = f"{wanted.label} now points at version {wanted.version}" if wanted.label \
            else f"version {wanted.version} was asked for"
        found.append(f"the interrupted run scored with version {saved.version} and {now}; one output never mixes "
                     f"two versions: finish it with {saved.model}:{saved.version} --resume, or start again "
                     f"without --resume")
    return found


def claim(parts: Path, output: Path) -> int:
    """Hold the parts folder (made if need be) for this process; return the descriptor that holds it.

    A second run on the same output, while this one lives, is refused rather than interleaved; the
    hold ends with the process, so a killed run leaves nothing that blocks its ``--resume``.
    """
    parts.mkdir(exist_ok=True)
    held = os.open(parts, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(held)
        raise ValueError(f"another score run is writing {output.name} now") from None
    return held

"""Read packaging CSVs with the dtypes the schema declares, so codes stay text.

``pd.read_csv`` guesses: a branch code "01" becomes the integer 1 and packaging then fails far
from the cause. Columns the model or the ``--schema`` declares as text are read as text (leading
zeros kept, missing cells still missing); declared numbers are read as numbers. Every failure
is one ``ValueError`` line naming the file and, where known, the column. Nothing else here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DTYPES = {"str": str, "float64": "float64", "Int64": "Int64"}


def read_frame(path: Path, dtypes: dict[str, str] | None = None, *, option: str = "--data") -> pd.DataFrame:
    """Read ``path`` with ``dtypes`` (column → "str", "float64" or "Int64") applied to the columns it has."""
    wanted: dict[str, str] = {}
    try:
        header = pd.read_csv(path, nrows=0).columns
        wanted = {name: kind for name, kind in (dtypes or {}).items() if name in header}
        return pd.read_csv(path, dtype={name: DTYPES[kind] for name, kind in wanted.items()} or None)
    except UnicodeDecodeError:
        raise ValueError(f"{option} {path}: not a UTF-8 CSV file") from None
    except (ValueError, TypeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        column = _culprit(path, wanted)
        where = f"column {column!r} cannot be read as {wanted[column]}: " if column else ""
        raise ValueError(f"{option} {path}: {where}{text}") from None


def _culprit(path: Path, wanted: dict[str, str]) -> str | None:
    """Find the first column whose declared dtype its text cannot take (pandas does not say)."""
    if not wanted:
        return None
    try:
        raw = pd.read_csv(path, dtype=str, usecols=list(wanted))
    except (ValueError, TypeError):
        return None
    for name, kind in wanted.items():
        if kind == "str":
            continue
        try:
            pd.to_numeric(raw[name]).astype(DTYPES[kind])
        except (ValueError, TypeError):
            return name
    return None

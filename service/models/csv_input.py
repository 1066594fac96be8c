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
    try:
        header = pd.read_csv(path, nrows=0).columns
        wanted = {name: DTYPES[kind] for name, kind in (dtypes or {}).items() if name in header}
        return pd.read_csv(path, dtype=wanted or None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{option} {path}: {_column_error(exc, dtypes or {})}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{option} {path}: not a UTF-8 CSV file") from None


def _column_error(exc: Exception, dtypes: dict[str, str]) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for name, kind in dtypes.items():
        if f"'{name}'" in str(exc) or f"column {name}" in str(exc):
            return f"column {name!r} cannot be read as {kind}: {text}"
    return text

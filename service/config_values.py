"""How a setting's text in the environment becomes its value, and how its default reads in the docs.

``Config.from_env`` parses each variable with ``PARSERS[field type]``; a ``ValueError`` names
what was expected, and the caller names the variable. No other module's settings live here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def shown_default(value: Any) -> str:
    """A default as the settings reference's table shows it."""
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, tuple):
        return "`" + ",".join(map(str, value)) + "`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _parse_bool(raw: str) -> bool:
    if raw.lower() in TRUE_WORDS:
        return True
    if raw.lower() in FALSE_WORDS:
        return False
    raise ValueError("expected one of " + ", ".join(TRUE_WORDS + FALSE_WORDS[:-1]))


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


PARSERS: dict[Any, Callable[[str], Any]] = {
    "str": str,
    "int": _parse_int,
    "float": float,
    "bool": _parse_bool,
    "bool | None": lambda raw: _parse_bool(raw) if raw else None,
    "Path": Path,
    "Path | None": lambda raw: Path(raw) if raw else None,
    "str | None": lambda raw: raw or None,
    "tuple[str, ...]": _parse_list,
}

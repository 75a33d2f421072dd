"""Hints for what a user typed: the allowed word closest to a misspelt one, and what to say of a value no
row holds.

Importing this module loads nothing heavy: the sweep file's messages use it too.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import pandas as pd

#: how many distinct values a message lists before it says how many there are in all.
SHOWN_VALUES = 20


def closest(word: str, allowed: Iterable[Any]) -> Optional[str]:
    """The allowed word most like ``word`` (difflib's ratio at least 0.6, case aside), or None."""
    import difflib

    choices = {str(choice).lower(): str(choice) for choice in allowed if str(choice) != word}
    found = difflib.get_close_matches(str(word).lower(), list(choices), n=1, cutoff=0.6)
    return choices[found[0]] if found else None


def did_you_mean(word: Any, allowed: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the allowed word closest to ``word``; empty when none is close
    (or ``word`` is no text)."""
    if not isinstance(word, str):
        return ""
    match = closest(word, allowed)
    return f" (did you mean {match!r}?)" if match is not None else ""


def listing(values: Sequence[Any]) -> str:
    """Values as a message lists them: the first :data:`SHOWN_VALUES`, then how many there are in all."""
    shown = ", ".join(_text(value) for value in values[:SHOWN_VALUES])
    return shown + (f", ... ({len(values)} in all)" if len(values) > SHOWN_VALUES else "") if values else "none"


def absent_value(value: str, series: pd.Series) -> str:
    """What to say of ``value``, held by no row of ``series`` (a column of the whole table):
    ``"no row has this value (did you mean 'x'?); present: a, b"``."""
    present = sorted(series.dropna().unique().tolist())
    hint = did_you_mean(value, present) if _is_text(series) else ""
    return f"no row has this value{hint}; present: {listing(present)}"


def _is_text(series: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_string_dtype(series.dtype) or series.dtype == object


def _text(value: Any) -> str:
    """A value as a listing shows it: numbers without an exponent's noise (``0.512``, not ``0.5120000001``)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)

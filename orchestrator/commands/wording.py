"""Counts and numbers as the commands print them: ``1 seed``, ``2 seeds``, ``1,390,080``, ``0.00001``."""
from __future__ import annotations

from decimal import Decimal


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, in the plural unless there is exactly one: ``count(1, "init")`` is ``1 init``."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def plain_number(value: float, significant: int = 4) -> str:
    """``value`` without an exponent: a whole number grouped by thousands (``1,390,080``), one of 1 or more
    with one decimal (``2,200.5``), a smaller one with ``significant`` significant digits (``0.02252``,
    ``0.00001``)."""
    number = float(value)
    if number.is_integer():
        return f"{int(number):,}"
    if abs(number) >= 1:
        return f"{number:,.1f}"
    return format(Decimal(f"{number:.{significant}g}"), "f")

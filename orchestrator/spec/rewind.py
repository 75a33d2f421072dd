"""Rewinding points: the early iterate k a winning ticket goes back to (``0``, ``500it``, ``1ep``)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

_REWIND = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


@dataclass(frozen=True)
class RewindPoint:
    """A rewinding point k, as written (``500it``, ``1ep`` or ``0``); made by :func:`parse_rewind`
    (a plain value: its fields are checked there, so it needs no pydantic model)."""

    text: str
    amount: int
    unit: Literal["it", "ep"]

    def iterations(self, iterations_per_epoch: int) -> int:
        """k in optimizer steps for a recipe with the given steps per epoch."""
        return self.amount * iterations_per_epoch if self.unit == "ep" else self.amount


def parse_rewind(value: Any) -> RewindPoint:
    """Parse ``0``, ``500it`` or ``1ep``; raise ValueError with what is allowed."""
    allowed = "allowed: 0 (the original initialisation), '<n>it' (iterations) or '<n>ep' (epochs), n >= 0"
    if isinstance(value, bool):
        raise ValueError(f"cannot read {value!r} as a rewinding point; {allowed}")
    if isinstance(value, int):
        if value != 0:
            raise ValueError(f"a bare number must be 0, got {value}; write '{value}it' or '{value}ep'; {allowed}")
        return RewindPoint(text="0", amount=0, unit="it")
    match = _REWIND.match(str(value))
    if not match:
        raise ValueError(f"cannot read {value!r} as a rewinding point; {allowed}")
    amount = int(match.group(1))
    unit: Literal["it", "ep"] = "ep" if match.group(2) == "ep" else "it"
    return RewindPoint(text="0" if amount == 0 else f"{amount}{unit}", amount=amount, unit=unit)

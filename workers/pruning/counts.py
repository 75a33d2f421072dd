"""How many weights IMP rounds remove, without torch: the recurrence both the pruning rules
(:mod:`workers.pruning.masks`) and the sweep file's checks (through :mod:`workers.catalog`) follow."""
from __future__ import annotations

import math


def prune_count(remaining: int, rate: float) -> int:
    """How many of ``remaining`` weights one round at ``rate`` removes: ``ceil(rate * remaining)``.

    The product is rounded to 9 decimals first so that float noise (``0.2 * 35`` is
    ``7.000000000000001``) does not remove one weight too many.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"pruning rate must be in (0, 1), got {rate}")
    return min(remaining, math.ceil(round(rate * remaining, 9)))


def kept_after_rounds(total: int, rate: float, level: int) -> int:
    """Weights left after ``level`` global rounds at ``rate`` starting from ``total`` (same recurrence)."""
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    remaining = int(total)
    for _ in range(level):
        remaining -= prune_count(remaining, rate)
    return remaining

"""Filters whose values no row holds: a typo in ``--where mask_source=rotnett`` keeps nothing (with ``=``)
or everything (with ``!=``) without a word; the commands say so instead, naming the values there are."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Optional

import pandas as pd

from results.conditions import MISSING_WORDS, matches, parse_conditions
from results.hints import absent_value


def value_in_no_row(where: Iterable[str], frame: pd.DataFrame,
                    whole: Callable[[list[str]], pd.DataFrame]) -> Optional[tuple[str, str]]:
    """The first value of an ``=``, ``!=``, ``in`` or ``not in`` filter of ``where`` that no row of the
    table holds, as ``(the filter, what to say)``; None when each is held by some row, or the table is empty.

    ``frame``: rows of the table already read, before the filters (any part of it: a value one of them
    holds is present); ``whole(columns)``: those columns of every row, read only for the values
    ``frame`` lacks. A value that names a missing one (``none``) is left alone.
    """
    conditions = parse_conditions(list(where), frame.columns)
    unseen = [(condition, value) for condition in conditions if condition.op in ("=", "!=", "in", "not in")
              for value in condition.values if value.lower() not in MISSING_WORDS
              and not matches(frame[condition.column], value, condition.column).any()]
    if not unseen:
        return None
    table = whole(sorted({condition.column for condition, _ in unseen}))
    if table.empty:
        return None
    for condition, value in unseen:
        if not matches(table[condition.column], value, condition.column).any():
            return condition.text, absent_value(value, table[condition.column])
    return None

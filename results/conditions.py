"""The ``--where`` conditions of a reading: parsed, applied to a results frame, and what they
let a reader skip (the rows of text equalities, :func:`text_equalities`).

A condition is ``COLUMN OP VALUE``; the value is converted to the column's dtype before
comparing (see :func:`filter_rows`). The frame is never modified.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from results.hints import did_you_mean

#: Filter values that mean "missing" (e.g. ``level=none`` selects one-shot rows).
MISSING_WORDS = {"", "none", "null", "na", "nan", "<na>"}
#: Relative tolerance when a filter compares float columns (0.8**3 == 0.512).
_FLOAT_RTOL = 1e-6

#: ``COLUMN OP VALUE``: the column is everything before the operator (no blanks), so a
#: text value may itself hold ``=`` (``sweep=a=b``). Longer operators are tried first.
_CONDITION = re.compile(
    r"^\s*(?P<column>[^\s=!<>]+)\s*(?P<op>==|!=|<=|>=|=|<|>|\s(?:not\s+)?in\s)(?P<value>.*)$",
    re.IGNORECASE | re.DOTALL,
)
#: ``a and b``: several conditions in one string.
_AND = re.compile(r"(?:^|\s+)and(?:\s+|$)", re.IGNORECASE)
_FORMS = "COLUMN=VALUE, COLUMN!=VALUE, COLUMN<VALUE (<=, >, >=), 'COLUMN in V1,V2' or 'COLUMN not in V1,V2'"


@dataclass(frozen=True)
class Condition:
    """One parsed filter: ``column``, the operator (``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``,
    ``in``, ``not in``) and the value(s) as text (several only for ``in`` / ``not in``)."""

    text: str
    column: str
    op: str
    values: tuple[str, ...]


def parse_conditions(where: Iterable[str] | str | None, columns: Iterable[str]) -> list[Condition]:
    """Parse ``--where`` filters against the frame's ``columns``; each string may join several with ``and``.

    Raises :class:`ValueError` naming the filter for a malformed one, an unknown column
    (with the allowed columns) or an empty value.
    """
    if where is None:
        return []
    if isinstance(where, str):
        where = [where]
    columns = [str(column) for column in columns]
    parsed = []
    for text in where:
        for part in _AND.split(text.strip()) if text.strip() else [text]:
            parsed.append(_parse_condition(part, columns))
    return parsed


def _parse_condition(text: str, columns: list[str]) -> Condition:
    """One ``COLUMN OP VALUE`` condition."""
    match = _CONDITION.match(text)
    if not match:
        raise ValueError(f"filter {text!r}: expected {_FORMS}")
    column, raw = match["column"], match["value"].strip()
    op = " ".join(match["op"].lower().split())
    op = "=" if op == "==" else op
    if column not in columns:
        raise ValueError(f"filter {text!r}: unknown column {column!r}{did_you_mean(column, columns)}; "
                         f"allowed columns: {', '.join(columns)}")
    if op in ("in", "not in"):
        if raw[:1] + raw[-1:] in ("()", "[]", "{}"):
            raw = raw[1:-1]
        values = tuple(value.strip() for value in raw.split(","))
        if not raw.strip() or any(not value for value in values):
            raise ValueError(f"filter {text!r}: expected a comma-separated list of values after {op!r}")
        return Condition(text, column, op, values)
    if op in ("<", "<=", ">", ">=") and raw.lower() in MISSING_WORDS:
        raise ValueError(f"filter {text!r}: {op} needs a value to compare with")
    return Condition(text, column, op, (raw,))


def filter_rows(df: pd.DataFrame, where: Iterable[str] | str | None) -> pd.DataFrame:
    """Keep the rows matching every filter (all filters, and the parts of one joined by ``and``, AND together).

    A filter is ``key=value``, ``key!=value``, a comparison ``key<value`` (``<=``, ``>``,
    ``>=``), or a set ``key in v1,v2`` / ``key not in v1,v2``; ``"top1>=0.9 and
    mask_source in labels,rotnet"`` is two filters. ``value`` is converted to the column's
    dtype before comparing: integers for integer columns, floats for float columns
    (equal within a relative tolerance of 1e-6, also at the edge of ``<=``/``>=``/``<``/``>``;
    a trailing ``%`` divides by 100, so ``nominal_fraction=51.2%`` works), text as is
    (text comparisons are by character code, so ISO times in ``recorded_at`` order by time).
    ``none``/``null``/``na`` or an empty value match missing values (``level=none``
    selects one-shot rows; ``level!=none`` IMP rows). ``!=`` and ``not in`` keep missing
    values; the comparisons never match them. An unknown column raises :class:`ValueError`
    naming the allowed columns; a malformed filter or a value that does not convert
    raises :class:`ValueError` too.
    """
    conditions = parse_conditions(where, df.columns)
    keep = np.ones(len(df), dtype=bool)
    for condition in conditions:
        keep &= _condition_mask(df[condition.column], condition)
    return df[keep] if conditions else df


def _condition_mask(series: pd.Series, condition: Condition) -> np.ndarray:
    """Boolean array of the rows of ``series`` that satisfy ``condition``."""
    op = condition.op
    if op in ("=", "!=", "in", "not in"):
        equal = np.zeros(len(series), dtype=bool)
        for raw in condition.values:
            equal |= matches(series, raw, condition.column)
        return ~equal if op in ("!=", "not in") else equal
    return _compares(series, condition.values[0], op, condition.column)


def matches(series: pd.Series, raw: str, column: str) -> np.ndarray:
    """Boolean array of ``series == raw`` after converting ``raw`` to the series' dtype (NA -> False)."""
    if raw.lower() in MISSING_WORDS:
        return series.isna().to_numpy(dtype=bool)
    dtype = series.dtype
    try:
        if pd.api.types.is_bool_dtype(dtype):
            value = {"true": True, "1": True, "false": False, "0": False}[raw.lower()]
            equal = series == value
        elif pd.api.types.is_integer_dtype(dtype):
            number = float(raw)
            if not number.is_integer():
                return np.zeros(len(series), dtype=bool)
            equal = series == int(number)
        elif pd.api.types.is_float_dtype(dtype):
            values = series.to_numpy(dtype=float, na_value=np.nan)
            return np.isclose(values, _number(raw), rtol=_FLOAT_RTOL, atol=0.0)
        elif isinstance(dtype, pd.StringDtype):
            equal = series == raw  # as compared as objects, without making 100,000 of them
        else:
            equal = series.astype(object) == raw
    except (ValueError, KeyError):
        raise ValueError(f"filter on {column!r}: {raw!r} is not a valid {dtype} value") from None
    return pd.Series(equal, index=series.index).fillna(False).to_numpy(dtype=bool)


def _compares(series: pd.Series, raw: str, op: str, column: str) -> np.ndarray:
    """Boolean array of ``series OP raw``: numbers for numeric columns, text otherwise; NA never matches."""
    dtype = series.dtype
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        try:
            number = _number(raw)
        except ValueError:
            raise ValueError(f"filter on {column!r}: {raw!r} is not a number") from None
        values = series.to_numpy(dtype=float, na_value=np.nan)
        close = np.isclose(values, number, rtol=_FLOAT_RTOL, atol=0.0)
        with np.errstate(invalid="ignore"):
            below, above = values < number, values > number
        return {"<": below & ~close, "<=": below | close, ">": above & ~close, ">=": above | close}[op]
    text = series.astype(object)
    present = text.notna().to_numpy(dtype=bool)
    values = text.where(present, "").astype(str).to_numpy(dtype=object)
    compared = {"<": values < raw, "<=": values <= raw, ">": values > raw, ">=": values >= raw}[op]
    return np.asarray(compared, dtype=bool) & present


def _number(raw: str) -> float:
    """``raw`` as a float; a trailing ``%`` divides by 100 (``51.2%`` -> 0.512)."""
    return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)


def text_equalities(where: Iterable[str] | str | None, columns: Iterable[str],
                    text_columns: Iterable[str]) -> dict[str, list[str]]:
    """The rows ``where`` can keep, as far as its ``=`` and ``in`` filters on ``text_columns`` say:
    column -> the values allowed (those of all its filters), for :func:`results.load`'s ``only``.

    A reader that loads only these rows and then applies :func:`filter_rows` gets what it gets
    from every row: a text column matches such a filter exactly when it holds one of the values.
    Filters that name a missing value (``level=none``) are left to :func:`filter_rows`, and so
    is everything when ``where`` is malformed against ``columns`` (it then says why).
    """
    try:
        conditions = parse_conditions(where, columns)
    except ValueError:
        return {}
    text_columns = set(text_columns)
    allowed: dict[str, list[str]] = {}
    for condition in conditions:
        if condition.op not in ("=", "in") or condition.column not in text_columns:
            continue
        if any(value.lower() in MISSING_WORDS for value in condition.values):
            continue
        values = list(dict.fromkeys(condition.values))
        previous = allowed.get(condition.column)
        allowed[condition.column] = values if previous is None else [v for v in previous if v in values]
    return allowed

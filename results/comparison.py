"""Paired comparisons of two values of one column: does ``labels`` beat ``rotnet``, seed for seed?

:func:`compare` pairs the rows of the two values that agree on every other setting and on
the seed, and tests the mean of the paired differences of top-1 with a paired t-test (what
``scipy.stats.ttest_rel`` computes, for every setting at once): **two-sided** for ``A,B`` (is
there a difference?), **one-sided** for a stated direction ``A>B`` (does A beat B?) or ``A<B``.
The settings of one comparison are a family of tests: their p-values are also given
**Holm-adjusted** over the family, and a setting is marked significant by its adjusted p.
Pairing removes what a seed shares on both sides (its data order, its initialisation), so a
difference smaller than either side's spread can still hold; a seed is never counted twice
(rows of one side that share a setting and a seed, such as the same run in two workspaces
pooled by ``by``, are averaged into one). scipy is imported only when a comparison is made,
and only ``scipy.special`` (Student's t distribution), which loads in a fifth of the time
``scipy.stats`` takes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np
import pandas as pd

from results.conditions import matches
from results.frame_text import frame_text
from results.hints import absent_value, did_you_mean
from results.query import grouping, percent_label

#: A difference is marked significant when its p-value is below this.
ALPHA = 0.05
#: the alternatives a comparison can test: a difference (two-sided), or A above (below) B.
ALTERNATIVES = ("two-sided", "greater", "less")
#: Differences that span less than this are equal: float noise (0.9 - 0.7 vs 0.8 - 0.6), not spread.
_NO_SPREAD = 1e-12
#: The columns of :func:`compare`'s result after the setting columns.
COMPARE_STATS: tuple[str, ...] = (
    "top1_a", "top1_b", "diff", "diff_se", "n", "t", "p", "p_holm", "significant", "measured_fraction",
)


class Comparison(NamedTuple):
    """``--compare COLUMN=A,B`` (two-sided), ``COLUMN=A>B`` or ``COLUMN=A<B`` (one-sided, that direction)."""

    column: str
    a: str
    b: str
    alternative: str = "two-sided"


def method_name(alternative: str) -> str:
    """What the p-values come from, as the output names it."""
    return "paired t-test, two-sided" if alternative == "two-sided" else \
        f"paired t-test, one-sided (A {'>' if alternative == 'greater' else '<'} B)"


def parse_compare(text: str) -> Comparison:
    """``"COLUMN=A,B"``, ``"COLUMN=A>B"`` or ``"COLUMN=A<B"`` -> :class:`Comparison`; :class:`ValueError`
    unless exactly two distinct values."""
    column, equals, values = text.partition("=")
    column = column.strip()
    if not equals or not column:
        raise ValueError(f"{text!r}: expected COLUMN=A,B (a difference, two-sided) or COLUMN=A>B (A beats B, "
                         "one-sided), e.g. mask_source=labels,rotnet")
    separators = [s for s in (",", ">", "<") if s in values]
    if len(separators) != 1:
        raise ValueError(f"{text!r}: expected exactly two values after '=', separated by ',' (two-sided) or by "
                         "'>' or '<' (one-sided)")
    parts = [value.strip() for value in values.split(separators[0])]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{text!r}: expected exactly two values after '=', separated by {separators[0]!r} "
                         f"(got {len([p for p in parts if p])})")
    if parts[0] == parts[1]:
        raise ValueError(f"{text!r}: the two values are the same")
    alternative = {",": "two-sided", ">": "greater", "<": "less"}[separators[0]]
    return Comparison(column, parts[0], parts[1], alternative)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of the p-values ``p`` (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(p, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if not len(tested):
        return adjusted
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    steps = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted[order] = steps
    return adjusted


def compare(df: pd.DataFrame, column: str, a: str, b: str, by: Sequence[str] | None = None,
            alpha: float = ALPHA, alternative: str = "two-sided") -> pd.DataFrame:
    """The paired difference ``a - b`` of top-1 per setting, over the seeds both sides share.

    ``column`` is any column of ``df``; ``a`` and ``b`` are two of its values as text
    (converted to the column's dtype as ``--where`` filters are: ``nominal_fraction=0.8,51.2%``).
    A row of ``a`` and one of ``b`` form a pair when they agree on every column of the
    grouping (:func:`results.query.summarize`'s settings, or ``by``), ``column`` aside,
    and on ``seed``. Rows of one side that share all of these (only possible with a
    ``by`` that leaves settings out) are averaged first.

    One result row per setting (the grouping columns without ``column``) where at least
    one seed is paired, sorted as :func:`summarize` sorts: ``top1_a`` / ``top1_b`` (the
    two sides' means over the paired seeds), ``diff`` (mean of ``a - b``), ``diff_se``
    (its standard error: sample standard deviation / sqrt(n)), ``n`` (pairs), ``t`` and
    ``p`` (the paired t-test, ``scipy.stats.ttest_rel`` with this ``alternative``: ``two-sided``,
    ``greater`` for a > b, ``less``), ``p_holm`` (``p`` Holm-adjusted over the settings of the
    result), ``significant`` (``p_holm < alpha``) and ``measured_fraction`` (mean measured
    fraction remaining of the paired rows). With n < 2 pairs, or differences all equal (within 1e-12), there is
    no spread to test against: ``diff_se``, ``t`` and ``p`` are NaN and ``significant``
    is False.
    ``result.attrs`` holds ``column``, ``a``, ``b``, ``alpha``, ``alternative``, ``test``,
    ``unpaired`` (settings with rows on both sides but no shared seed, or on one side only: left
    out) and ``averaged`` (rows merged into another of the same side, setting and seed).

    Raises :class:`ValueError` for a column the frame lacks, ``column`` = ``seed`` or
    ``top1``, a value that is not in the data, or a bad ``by``.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative {alternative!r}; allowed: {', '.join(ALTERNATIVES)}")
    if column not in df.columns:
        allowed = list(map(str, df.columns))
        raise ValueError(f"unknown column {column!r}{did_you_mean(column, allowed)}; allowed columns: "
                         f"{', '.join(allowed)}")
    if column in ("seed", "top1"):
        raise ValueError(f"{column!r} cannot be compared: pairs are made by seed and differ in top1")
    keys = [c for c in grouping(df, by) if c != column]
    if "seed" in keys:
        raise ValueError("'seed' is what pairs the two sides; leave it out of the grouping")
    sides = []
    averaged = 0
    for value, suffix in ((a, "_a"), (b, "_b")):
        side = df[matches(df[column], value, column)]
        if side.empty:
            raise ValueError(f"{column}={value}: {absent_value(value, df[column])}")
        means = side.groupby(keys + ["seed"], dropna=False, sort=False)[["top1", "measured_fraction"]].mean()
        averaged += len(side) - len(means)
        sides.append(means.add_suffix(suffix))
    paired = pd.concat(sides, axis=1, join="inner").reset_index()
    paired["d"] = paired["top1_a"] - paired["top1_b"]
    paired["measured"] = paired[["measured_fraction_a", "measured_fraction_b"]].mean(axis=1)

    result = _per_setting(paired, keys, alpha, alternative)
    if keys:
        result = result.sort_values(keys, ascending=[c != "nominal_fraction" for c in keys],
                                    na_position="first", kind="stable").reset_index(drop=True)
        left, right = (cast(pd.MultiIndex, side.index).droplevel(-1) for side in sides)  # keys, then the seed
        settings = left.append(right).unique()
        unpaired = len(settings) - len(result)
    else:
        unpaired = 1 - len(result)
    result.attrs.update(column=column, a=a, b=b, alpha=alpha, alternative=alternative, test=method_name(alternative),
                        unpaired=unpaired, averaged=averaged)
    return result


def _per_setting(paired: pd.DataFrame, keys: list[str], alpha: float, alternative: str) -> pd.DataFrame:
    """One row of statistics per setting of ``paired`` (columns ``keys``, ``top1_a``, ``top1_b``, ``d``).

    The t statistic is mean(d) / (sd(d) / sqrt(n)); p = 2 * P(T_{n-1} < -|t|) two-sided,
    P(T_{n-1} > t) for ``greater``, P(T_{n-1} < t) for ``less``: what ``scipy.stats.ttest_rel``
    computes pair by pair; done for all settings at once, then Holm-adjusted over them.
    """
    from scipy.special import stdtr  # the CDF of Student's t, as scipy.stats.t uses
    columns = [*keys, *COMPARE_STATS]
    if paired.empty:
        empty = paired[keys].iloc[0:0].copy()
        for stat in COMPARE_STATS:
            empty[stat] = pd.Series(dtype="Int64" if stat == "n" else bool if stat == "significant" else "float64")
        return empty[columns].reset_index(drop=True)
    if keys:
        grouped = paired.groupby(keys, dropna=False, sort=False)
        result = grouped.agg(top1_a=("top1_a", "mean"), top1_b=("top1_b", "mean"), diff=("d", "mean"),
                             sd=("d", "std"), high=("d", "max"), low=("d", "min"), n=("d", "size"),
                             measured_fraction=("measured", "mean"))
        result = result.reset_index()
    else:
        d = paired["d"]
        result = pd.DataFrame({"top1_a": [paired["top1_a"].mean()], "top1_b": [paired["top1_b"].mean()],
                               "diff": [d.mean()], "sd": [d.std()], "high": [d.max()], "low": [d.min()],
                               "n": [len(d)], "measured_fraction": [paired["measured"].mean()]})
    n = result["n"].to_numpy(dtype=float)
    spread = result["high"].to_numpy(dtype=float) - result["low"].to_numpy(dtype=float)
    testable = (n >= 2) & (spread > _NO_SPREAD)
    se = np.where(testable, result["sd"].to_numpy(dtype=float) / np.sqrt(n), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(testable, result["diff"].to_numpy(dtype=float) / se, np.nan)
        dof = np.maximum(n - 1, 1)
        tail = {"two-sided": 2.0 * stdtr(dof, -np.abs(t)), "greater": stdtr(dof, -t), "less": stdtr(dof, t)}
        p = np.where(testable, tail[alternative], np.nan)
    adjusted = holm(p)
    result = result.assign(diff_se=se, t=t, p=p, p_holm=adjusted, significant=testable & (adjusted < alpha))
    result["n"] = result["n"].astype("Int64")
    return result[columns]


def format_comparison(result: pd.DataFrame) -> str:
    """The comparison as text: a header naming the test and threshold, the settings common to
    every row once, then one line per setting with top-1 and the difference in percentage points."""
    column, a, b = result.attrs["column"], result.attrs["a"], result.attrs["b"]
    lines = [
        f"top-1 of {column}={a} minus {column}={b}, in percentage points, paired by seed over the seeds both share",
        describe_test(result),
    ]
    unpaired = result.attrs.get("unpaired", 0)
    if unpaired:
        lines.append(f"{unpaired} setting(s) with no seed on both sides are left out")
    if result.attrs.get("averaged"):
        lines.append(f"{result.attrs['averaged']} row(s) repeating a side's setting and seed (the same seed in "
                     "several workspaces or pooled settings) averaged into one: no seed counts twice")
    if result.empty:
        lines.append("no setting has a seed on both sides")
        return "\n".join(lines)
    common, table = comparison_display(result)
    if common:
        lines.append("in every row: " + common)
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_rows", None):
        lines.append(frame_text(table))
    return "\n".join(lines)


def describe_test(result: pd.DataFrame) -> str:
    """One line naming the test, the family the Holm adjustment runs over and what ``*`` marks."""
    alpha = result.attrs.get("alpha", ALPHA)
    family = int(result["p"].notna().sum()) if "p" in result else 0
    return (f"{result.attrs.get('test', method_name('two-sided'))}; p (Holm): adjusted over the {family} setting(s) "
            f"tested here; * marks Holm-adjusted p < {alpha:g}; fewer than 2 pairs (or no spread) give no p-value")


def comparison_display(result: pd.DataFrame, rows: int | None = None) -> tuple[str, pd.DataFrame]:
    """The rows of a non-empty comparison as shown: ``("col=value, ...", table of text)``.

    The first item names the settings common to every row (empty when none is); the table
    holds the settings that vary, the fraction remaining, both sides' top-1 and the difference
    in percent, its standard error, n, p and ``*`` where significant: of every row, or of the
    first ``rows`` (what varies is still what varies over all of them).
    """
    a, b = result.attrs["a"], result.attrs["b"]
    keys = [c for c in result.columns if c not in COMPARE_STATS]
    constant = [c for c in keys if result[c].nunique(dropna=False) == 1]
    common = ", ".join(f"{c}={_text(result[c].iloc[0])}" for c in constant)
    if rows is not None:
        result = result.head(rows)
    table = pd.DataFrame({c: result[c].map(_text) for c in keys if c not in constant and c != "nominal_fraction"})
    if "nominal_fraction" in keys and "nominal_fraction" not in constant:
        # as the pivot's rows: the measured fraction (the nominal one when nothing was measured)
        shown = result["measured_fraction"].fillna(result["nominal_fraction"])
        table["fraction remaining"] = shown.map(percent_label)
    table[a] = (100 * result["top1_a"]).map("{:.1f}".format)
    table[b] = (100 * result["top1_b"]).map("{:.1f}".format)
    table["diff"] = (100 * result["diff"]).map("{:+.2f}".format)
    table["se"] = (100 * result["diff_se"]).map(lambda v: "—" if pd.isna(v) else f"{v:.2f}")
    table["n"] = result["n"].astype(int)
    table["p"] = result["p"].map(lambda v: "—" if pd.isna(v) else f"{v:.3g}")
    table["p (Holm)"] = result["p_holm"].map(lambda v: "—" if pd.isna(v) else f"{v:.3g}")
    table[""] = result["significant"].map({True: "*", False: ""})
    return common, table


def _text(value) -> str:
    """A setting value as shown: ``-`` for a missing one."""
    return "-" if pd.isna(value) else str(value)

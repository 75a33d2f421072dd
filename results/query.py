"""Filtering, per-setting summaries and the fraction x setting pivot of a results frame.

All functions take the raw frame of :func:`results.table.load` (one row per seed) and
never modify it. ``top1`` and the fractions are stored as fractions in [0, 1]; the
human-facing strings (pivot cells, row labels) are in percent.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

#: the ``rewind`` value of cells whose init depends on no rewinding point (random masks).
NO_REWIND = "-"

#: A setting is everything but the seed: summarize() groups by these columns
#: (``transfer`` keeps linear and fine-tuning evaluations apart; NULL on the pruning grid).
SETTING_COLUMNS: tuple[str, ...] = (
    "sweep", "dataset", "arch", "mask_source", "init", "transfer", "rewind", "level", "nominal_fraction",
)
#: Columns of summarize()'s result after the setting columns.
SUMMARY_STATS: tuple[str, ...] = ("top1_mean", "top1_se", "n", "measured_fraction")

#: Filter values that mean "missing" (e.g. ``level=none`` selects one-shot rows).
_MISSING_WORDS = {"", "none", "null", "na", "nan", "<na>"}
#: Relative tolerance when a filter compares float columns (0.8**3 == 0.512).
_FLOAT_RTOL = 1e-6


# --------------------------------------------------------------------------- filters


def filter_rows(df: pd.DataFrame, where: Iterable[str] | str | None) -> pd.DataFrame:
    """Keep the rows matching every ``key=value`` / ``key!=value`` filter (filters AND together).

    ``value`` is converted to the column's dtype before comparing: integers for integer
    columns, floats for float columns (compared with a relative tolerance of 1e-6, and a
    trailing ``%`` divides by 100, so ``nominal_fraction=51.2%`` works), text as is.
    ``none``/``null``/``na`` or an empty value match missing values (``level=none``
    selects one-shot rows; ``level!=none`` IMP rows). ``key!=value`` keeps missing
    values. An unknown column raises :class:`ValueError` naming the allowed columns; a
    malformed filter or a value that does not convert raises :class:`ValueError` too.
    """
    if where is None:
        return df
    if isinstance(where, str):
        where = [where]
    keep = pd.Series(True, index=df.index)
    for condition in where:
        column, negate, raw = _parse_condition(condition, df.columns)
        matches = _matches(df[column], raw, column)
        keep &= ~matches if negate else matches
    return df[keep]


def _parse_condition(condition: str, columns: pd.Index) -> tuple[str, bool, str]:
    """Split ``key=value`` / ``key!=value`` into (column, negate, value)."""
    equals = condition.find("=")
    if equals <= 0 or (equals == 1 and condition[0] == "!"):
        raise ValueError(f"filter {condition!r}: expected key=value or key!=value")
    negate = condition[equals - 1] == "!"
    key = condition[: equals - 1 if negate else equals].strip()
    raw = condition[equals + 1 :].strip()
    if key not in columns:
        raise ValueError(
            f"filter {condition!r}: unknown column {key!r}; allowed columns: {', '.join(map(str, columns))}"
        )
    return key, negate, raw


def _matches(series: pd.Series, raw: str, column: str) -> pd.Series:
    """Boolean mask of ``series == raw`` after converting ``raw`` to the series' dtype (NA -> False)."""
    if raw.lower() in _MISSING_WORDS:
        return series.isna()
    dtype = series.dtype
    try:
        if pd.api.types.is_bool_dtype(dtype):
            value = {"true": True, "1": True, "false": False, "0": False}[raw.lower()]
            equal = series == value
        elif pd.api.types.is_integer_dtype(dtype):
            number = float(raw)
            if not number.is_integer():
                return pd.Series(False, index=series.index)
            equal = series == int(number)
        elif pd.api.types.is_float_dtype(dtype):
            number = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
            values = series.to_numpy(dtype=float, na_value=np.nan)
            equal = pd.Series(np.isclose(values, number, rtol=_FLOAT_RTOL, atol=0.0), index=series.index)
        else:
            equal = series.astype(object) == raw
    except (ValueError, KeyError):
        raise ValueError(f"filter on {column!r}: {raw!r} is not a valid {dtype} value") from None
    return pd.Series(equal, index=series.index).fillna(False).astype(bool)


# --------------------------------------------------------------------------- summary


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (every column of :data:`SETTING_COLUMNS`, i.e. all but the seed).

    Columns: the setting columns, then ``top1_mean``, ``top1_se`` (standard error: sample
    standard deviation / sqrt(n); NaN when n == 1 since one seed gives no spread estimate),
    ``n`` (number of seeds) and ``measured_fraction`` (mean measured fraction remaining).
    Missing values in setting columns (``level`` of one-shot runs) form their own group.
    Rows are sorted by setting, fractions from largest to smallest.
    """
    missing = [c for c in SETTING_COLUMNS + ("top1", "measured_fraction") if c not in df.columns]
    if missing:
        raise ValueError(f"summarize: frame lacks column(s) {', '.join(missing)}")
    keys = list(SETTING_COLUMNS)
    if df.empty:
        empty = df[keys].iloc[0:0].copy()
        for stat in SUMMARY_STATS:
            empty[stat] = pd.Series(dtype="Int64" if stat == "n" else "float64")
        return empty.reset_index(drop=True)
    grouped = df.groupby(keys, dropna=False, sort=False)
    summary = grouped.agg(
        top1_mean=("top1", "mean"),
        top1_std=("top1", "std"),
        n=("top1", "size"),
        measured_fraction=("measured_fraction", "mean"),
    ).reset_index()
    summary["top1_se"] = summary["top1_std"] / np.sqrt(summary["n"])
    summary["n"] = summary["n"].astype("Int64")
    summary = summary[keys + list(SUMMARY_STATS)]
    summary = summary.sort_values(
        keys, ascending=[c != "nominal_fraction" for c in keys], na_position="first", kind="stable"
    )
    return summary.reset_index(drop=True)


# --------------------------------------------------------------------------- labels


def setting_labels(summary: pd.DataFrame) -> pd.Series:
    """A readable label per summary row naming its curve: ``"mask_source / init"`` plus what varies.

    The label always holds ``mask_source / init``, or ``mask_source / transfer`` for a
    transfer evaluation (``"rotnet / linear"``: its init is always the pretrained network).
    When the frame holds more than one
    value of ``sweep``, ``dataset`` or ``arch``, those lead the label; when it holds more
    than one ``rewind`` point, ``"rewind <value>"`` follows; when it mixes one-shot
    (``level`` missing) and IMP rows, ``"one-shot"`` / ``"IMP"`` follows. So curves from
    different sweeps or rewind points never share a label.
    """
    def varies(column: str) -> bool:
        return summary[column].nunique(dropna=False) > 1

    lead = [c for c in ("sweep", "dataset", "arch") if varies(c)]
    # cells whose init needs no rewinding point (random masks) carry NO_REWIND and
    # do not make the rewind point "vary"
    with_rewind = summary.loc[summary["rewind"] != NO_REWIND, "rewind"].nunique() > 1
    with_kind = summary["level"].isna().any() and summary["level"].notna().any()

    def label(row: pd.Series) -> str:
        how = row["init"] if pd.isna(row["transfer"]) else row["transfer"]
        parts = [str(row[c]) for c in lead] + [str(row["mask_source"]), str(how)]
        if with_rewind and row["rewind"] != NO_REWIND:
            parts.append(f"rewind {row['rewind']}")
        if with_kind:
            parts.append("one-shot" if pd.isna(row["level"]) else "IMP")
        return " / ".join(parts)

    if summary.empty:
        return pd.Series([], index=summary.index, dtype=object)
    return summary.apply(label, axis=1).astype(object)


def percent_label(fraction: float, decimals: int | None = None) -> str:
    """Format a fraction as a percent: one decimal (``0.512 -> "51.2%"``), two significant
    figures below 1% (``0.00124 -> "0.12%"``), or exactly ``decimals`` decimals if given."""
    if decimals is None:
        decimals = _default_decimals(fraction)
    return f"{100.0 * float(fraction):.{decimals}f}%"


def _default_decimals(fraction: float) -> int:
    percent = abs(100.0 * float(fraction))
    return 1 - math.floor(math.log10(percent)) if 0 < percent < 1 else 1


def _row_labels(shown: list[float], nominal: list[float]) -> list[str]:
    """Distinct percent labels for the pivot rows.

    ``shown`` (mean measured fractions) are labelled with more decimals until no two
    collide; if two are equal (tiny networks can measure the same fraction at two
    nominal levels), the nominal fraction is added: ``"0.10% (nominal 0.099%)"``.
    """
    for extra in range(0, 6):
        labels = [percent_label(f, _default_decimals(f) + extra) for f in shown]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{percent_label(s)} (nominal {percent_label(n)})" for s, n in zip(shown, nominal, strict=True)]


# --------------------------------------------------------------------------- pivot


def pivot(df: pd.DataFrame, numeric: bool = False) -> pd.DataFrame:
    """Fraction remaining x setting table of top-1, as in the paper's tables.

    Rows: one per nominal fraction, largest first, labelled by the mean measured
    fraction of all rows at that nominal fraction in percent (e.g. ``"51.2%"``; the
    nominal fraction stands in when nothing was measured). Columns: one per curve,
    labelled ``"mask_source / init"`` (e.g. ``"labels / winning_ticket"``).

    Several sweeps, datasets, architectures or rewind points are never averaged
    together: whatever varies among them goes into the column label (see
    :func:`setting_labels`: ``"sweepA / labels / winning_ticket"``,
    ``"labels / reinit / rewind 1ep"``). Mixed one-shot and IMP rows are told apart
    the same way. If two settings still land in one cell (e.g. two IMP levels at the
    same nominal fraction) a :class:`ValueError` asks to narrow with ``--where`` filters.

    With ``numeric=False`` (default) cells are strings ``"mean ± se (n)"`` in percent
    with one decimal, e.g. ``"91.3 ± 0.4 (3)"``; a single seed has no standard error
    and shows ``"91.3 ± — (1)"``; an empty cell is ``""``. With ``numeric=True`` the
    columns are a two-level index (``"mean" | "se" | "n"``, curve label) holding
    fractions (not percent), so ``pivot(df, numeric=True)["mean"]`` has the same
    layout as the string table.
    """
    summary = summarize(df)
    if summary.empty:
        if numeric:
            columns = pd.MultiIndex.from_arrays([[], []], names=["stat", "setting"])
            return pd.DataFrame(index=pd.Index([], name="fraction remaining"), columns=columns)
        return pd.DataFrame(index=pd.Index([], name="fraction remaining"))
    summary = summary.assign(
        setting=setting_labels(summary),
        # Row identity: nominal fractions equal up to float noise share a row.
        row_key=summary["nominal_fraction"].round(10),
    )

    cell_sizes = summary.groupby(["row_key", "setting"]).size()
    clashes = cell_sizes[cell_sizes > 1]
    if not clashes.empty:
        fraction, setting = clashes.index[0]
        count = int(clashes.iloc[0])
        varying = [c for c in SETTING_COLUMNS if summary[c].nunique(dropna=False) > 1]
        raise ValueError(
            f"pivot: {count} different settings fall in the cell ({percent_label(fraction)} nominal, "
            f"{setting!r}); narrow the rows with --where filters on one of: {', '.join(varying)}"
        )

    # Rows: nominal fractions, largest first, labelled by the mean measured fraction of
    # all rows at that nominal fraction (the nominal fraction when nothing was measured).
    row_keys = df["nominal_fraction"].round(10)
    measured = df["measured_fraction"].groupby(row_keys).mean()
    nominal = sorted(summary["row_key"].unique(), reverse=True)
    shown = [float(measured.get(f, np.nan)) if pd.notna(measured.get(f, np.nan)) else float(f) for f in nominal]
    labels = dict(zip(nominal, _row_labels(shown, nominal), strict=True))
    summary["row"] = summary["row_key"].map(labels)

    index = pd.Index([labels[f] for f in nominal], name="fraction remaining")
    settings = pd.Index(_ordered_settings(summary), name="setting")

    def table(values: str) -> pd.DataFrame:
        wide = summary.pivot(index="row", columns="setting", values=values)
        return wide.reindex(index=index, columns=settings)

    mean, se, n = table("top1_mean"), table("top1_se"), table("n")
    if numeric:
        out = pd.concat({"mean": mean.astype(float), "se": se.astype(float), "n": n.astype("Int64")}, axis=1)
        out.columns.names = ["stat", "setting"]
        return out

    cells = pd.DataFrame("", index=index, columns=settings, dtype=object)
    means, ses = mean.to_numpy(dtype=float), se.to_numpy(dtype=float)
    counts = n.to_numpy(dtype=float, na_value=np.nan)
    for i, row in enumerate(index):
        for j, column in enumerate(settings):
            if not np.isnan(counts[i, j]):
                cells.at[row, column] = format_cell(means[i, j], ses[i, j], int(counts[i, j]))
    return cells


def format_cell(mean: float, se: float, n: int) -> str:
    """``"mean ± se (n)"`` in percent with one decimal; ``"—"`` stands for a missing standard error."""
    se_text = "—" if pd.isna(se) else f"{100.0 * float(se):.1f}"
    return f"{100.0 * float(mean):.1f} ± {se_text} ({int(n)})"


def _ordered_settings(summary: pd.DataFrame) -> list[str]:
    """Curve labels in the order of their sorted setting (sweep, dataset, arch, mask, init, transfer, rewind)."""
    order = summary.sort_values(
        ["sweep", "dataset", "arch", "mask_source", "init", "transfer", "rewind", "level"],
        na_position="first",
        kind="stable",
    )["setting"]
    return list(dict.fromkeys(order))

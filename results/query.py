"""Per-setting summaries and the fraction x setting pivot of a results frame, and the
columns a reading needs (the ``--where`` filters are :mod:`results.conditions`).

All functions take the raw frame of :func:`results.table.load` (one row per seed) and
never modify it. ``top1`` and the fractions are stored as fractions in [0, 1]; the
human-facing strings (pivot cells, row labels) are in percent.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from results.conditions import parse_conditions
from results.hints import did_you_mean
from results.row import NO_REWIND

#: A setting is everything but the seed: summarize() groups by these columns
#: (``transfer`` keeps linear and fine-tuning evaluations apart; NULL on the pruning grid).
SETTING_COLUMNS: tuple[str, ...] = (
    "sweep", "dataset", "arch", "mask_source", "init", "transfer", "rewind", "level", "nominal_fraction",
)
#: Columns of summarize()'s result after the setting columns.
SUMMARY_STATS: tuple[str, ...] = ("top1_mean", "top1_se", "n", "measured_fraction")


# --------------------------------------------------------------------------- columns read


def columns_needed(where: Iterable[str] | str | None, by: Sequence[str] | None, compared: str | None,
                   columns: Sequence[str]) -> list[str] | None:
    """The columns of ``columns`` that filtering by ``where``, summarizing or pivoting by ``by``,
    plotting and comparing two values of ``compared`` read, in their order; None (all of them)
    when a filter, the grouping or the compared column is refused (the error message then names
    them all: :func:`grouping`)."""
    try:
        used = {condition.column for condition in parse_conditions(where, columns)}
    except ValueError:
        return None
    used.update(SETTING_COLUMNS + _SUMMARIZED)
    if "workspace" in columns:
        used.add("workspace")
    if by is not None and (not by or len(set(by)) < len(by) or set(by) & set(_SUMMARIZED)):
        return None
    for column in list(by or []) + ([compared, "seed"] if compared is not None else []):
        if column not in columns:
            return None
        used.add(column)
    return [column for column in columns if column in used]


# --------------------------------------------------------------------------- summary


def setting_columns(df: pd.DataFrame) -> tuple[str, ...]:
    """The columns that make a setting of ``df``: :data:`SETTING_COLUMNS`, led by ``workspace``
    when the frame has that column (several workspaces loaded at once are never averaged together)."""
    return (("workspace",) if "workspace" in df.columns else ()) + SETTING_COLUMNS


def grouping(df: pd.DataFrame, by: Sequence[str] | None = None) -> list[str]:
    """The columns :func:`summarize` groups by: ``by`` if given (checked), else :func:`setting_columns`.

    Raises :class:`ValueError` for a column the frame lacks (naming the allowed ones), a
    column given twice, an empty list, or ``top1`` / ``measured_fraction`` (they are what
    is summarized).
    """
    if by is None:
        return list(setting_columns(df))
    by = [str(column) for column in by]
    allowed = [str(c) for c in df.columns if c not in _SUMMARIZED]
    if not by:
        raise ValueError(f"no column given; allowed columns: {', '.join(allowed)}")
    for column in by:
        if column in _SUMMARIZED:
            raise ValueError(f"{column!r} is what is summarized, not a grouping; allowed columns: {', '.join(allowed)}")
        if column not in df.columns:
            raise ValueError(f"unknown column {column!r}{did_you_mean(column, allowed)}; allowed columns: "
                             f"{', '.join(allowed)}")
    repeated = sorted({column for column in by if by.count(column) > 1})
    if repeated:
        raise ValueError(f"column {repeated[0]!r} given twice")
    return by


#: summarize() computes these from the rows; they cannot be grouped by.
_SUMMARIZED = ("top1", "measured_fraction")


def summarize(df: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per setting: per value of every column of :func:`setting_columns` (all but the
    seed), or of the columns ``by`` when given (``by=["mask_source", "nominal_fraction"]``
    pools everything else: inits, rewind points, sweeps, workspaces).

    Columns: the grouping columns, then ``top1_mean``, ``top1_se`` (standard error: sample
    standard deviation / sqrt(n); NaN when n == 1 since one value gives no spread estimate),
    ``n`` (number of seeds) and ``measured_fraction`` (mean measured fraction remaining).
    A seed is never counted twice: rows of one group that share a seed (the same run in several
    workspaces, or settings that ``by`` pools) are averaged into one first, and
    ``summary.attrs["averaged"]`` says how many rows were merged so. Missing values in grouping columns (``level`` of
    one-shot runs) form their own group. Rows are sorted by the grouping columns in
    order, fractions from largest to smallest. A bad ``by`` raises :class:`ValueError`
    (see :func:`grouping`).
    """
    missing = [c for c in SETTING_COLUMNS + _SUMMARIZED if c not in df.columns]
    if missing:
        raise ValueError(f"summarize: frame lacks column(s) {', '.join(missing)}")
    keys = grouping(df, by)
    if df.empty:
        empty = df[keys].iloc[0:0].copy()
        for stat in SUMMARY_STATS:
            empty[stat] = pd.Series(dtype="Int64" if stat == "n" else "float64")
        return empty.reset_index(drop=True)
    averaged = 0
    if "seed" in df.columns and "seed" not in keys:
        per_seed = df.groupby([*keys, "seed"], dropna=False, sort=False)[["top1", "measured_fraction"]].mean()
        averaged = len(df) - len(per_seed)
        if averaged:
            df = per_seed.reset_index()
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
    ).reset_index(drop=True)
    summary.attrs["averaged"] = averaged
    return summary


# --------------------------------------------------------------------------- labels


def setting_labels(summary: pd.DataFrame, by: Sequence[str] | None = None) -> pd.Series:
    """A readable label per summary row naming its curve: ``"mask_source / init"`` plus what varies.

    With ``by`` (the columns of a custom grouping) the label is the row's values of those
    columns but ``nominal_fraction``, joined by ``" / "`` (``"all rows"`` when none is left).

    The label always holds ``mask_source / init``, or ``mask_source / transfer`` for a
    transfer evaluation (``"rotnet / linear"``: its init is always the pretrained network).
    When the frame holds more than one
    value of ``sweep``, ``dataset`` or ``arch``, those lead the label; when it holds more
    than one ``rewind`` point, ``"rewind <value>"`` follows; when it mixes one-shot
    (``level`` missing) and IMP rows, ``"one-shot"`` / ``"IMP"`` follows. So curves from
    different sweeps or rewind points never share a label. Several workspaces lead the
    label the same way.
    """
    if summary.empty:
        return pd.Series([], index=summary.index, dtype=object)
    if by is not None:
        shown = [c for c in by if c != "nominal_fraction"]
        if not shown:
            return pd.Series("all rows", index=summary.index, dtype=object)
        return summary[shown].astype(object).astype(str).agg(" / ".join, axis=1).astype(object)

    def varies(column: str) -> bool:
        return column in summary.columns and summary[column].nunique(dropna=False) > 1

    lead = [c for c in ("workspace", "sweep", "dataset", "arch") if varies(c)]
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


def pivot(df: pd.DataFrame, numeric: bool = False, by: Sequence[str] | None = None) -> pd.DataFrame:
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

    With ``by`` (a custom grouping, see :func:`summarize`) the columns are the values of
    the ``by`` columns (``nominal_fraction`` is always the rows, added when missing) and
    whatever ``by`` leaves out is pooled.
    """
    by = curve_grouping(by)
    summary = summarize(df, by)
    if summary.empty:
        if numeric:
            columns = pd.MultiIndex.from_arrays([[], []], names=["stat", "setting"])
            return pd.DataFrame(index=pd.Index([], name="fraction remaining"), columns=columns)
        return pd.DataFrame(index=pd.Index([], name="fraction remaining"))
    summary = summary.assign(
        setting=setting_labels(summary, by),
        # Row identity: nominal fractions equal up to float noise share a row.
        row_key=summary["nominal_fraction"].round(10),
    )

    _refuse_clashes(df, summary, by)
    nominal = sorted(summary["row_key"].unique(), reverse=True)
    labels = _fraction_labels(df, nominal)
    summary["row"] = summary["row_key"].map(labels)

    index = pd.Index([labels[f] for f in nominal], name="fraction remaining")
    settings = pd.Index(_ordered_settings(summary, by), name="setting")

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


def _refuse_clashes(df: pd.DataFrame, summary: pd.DataFrame, by: Sequence[str] | None) -> None:
    """ValueError when two settings land in one cell of the pivot (e.g. two IMP levels at one fraction)."""
    cell_sizes = summary.groupby(["row_key", "setting"]).size()
    clashes = cell_sizes[cell_sizes > 1]
    if not clashes.empty:
        fraction, setting = clashes.index[0]
        count = int(clashes.iloc[0])
        varying = [c for c in grouping(df, by) if summary[c].nunique(dropna=False) > 1]
        raise ValueError(
            f"pivot: {count} different settings fall in the cell ({percent_label(fraction)} nominal, "
            f"{setting!r}); narrow the rows with --where filters on one of: {', '.join(varying)}"
        )


def _fraction_labels(df: pd.DataFrame, nominal: list) -> dict:
    """Row label of each nominal fraction: the mean measured fraction of its rows (else the nominal one)."""
    measured = df["measured_fraction"].groupby(df["nominal_fraction"].round(10)).mean()
    shown = [float(measured.get(f, np.nan)) if pd.notna(measured.get(f, np.nan)) else float(f) for f in nominal]
    return dict(zip(nominal, _row_labels(shown, nominal), strict=True))


def format_cell(mean: float, se: float, n: int) -> str:
    """``"mean ± se (n)"`` in percent with one decimal; ``"—"`` stands for a missing standard error."""
    se_text = "—" if pd.isna(se) else f"{100.0 * float(se):.1f}"
    return f"{100.0 * float(mean):.1f} ± {se_text} ({int(n)})"


def curve_grouping(by: Sequence[str] | None) -> list[str] | None:
    """``by`` with ``nominal_fraction`` added last when missing (a curve needs its fractions); None stays None."""
    if by is None:
        return None
    return list(by) + ([] if "nominal_fraction" in by else ["nominal_fraction"])


def _ordered_settings(summary: pd.DataFrame, by: Sequence[str] | None = None) -> list[str]:
    """Curve labels in the order of their sorted setting (workspace, sweep, dataset, arch, mask, init,
    transfer, rewind; or the ``by`` columns but the fraction)."""
    if by is None:
        order_by = [c for c in ("workspace",) if c in summary.columns] + [
            "sweep", "dataset", "arch", "mask_source", "init", "transfer", "rewind", "level"]
    else:
        order_by = [c for c in by if c != "nominal_fraction"]
    if not order_by:
        return list(dict.fromkeys(summary["setting"]))
    order = summary.sort_values(order_by, na_position="first", kind="stable")["setting"]
    return list(dict.fromkeys(order))

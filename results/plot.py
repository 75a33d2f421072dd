"""Top-1 accuracy vs fraction of weights remaining, drawn like the paper's figures.

matplotlib is imported only when a plot is drawn, so ``import results`` stays light.
The figure is a plain :class:`matplotlib.figure.Figure` rendered by the Agg canvas: no
pyplot, no global figure registry, no display needed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results.atomic_files import atomic_save_with
from results.query import _ordered_settings, curve_grouping, grouping, percent_label, setting_labels, summarize
from results.row import NO_REWIND
from results.top1_drawing import Curves

#: At most this many distinct fractions get their own labelled tick on the x axis.
MAX_FRACTION_TICKS = 16


def plot_top1_vs_fraction(df: pd.DataFrame, out_path: str | os.PathLike, title: str | None = None,
                          by: Sequence[str] | None = None):
    """Plot mean top-1 vs fraction of weights remaining and save it atomically to ``out_path``.

    One line per curve of :func:`results.query.setting_labels` (``mask_source / init``,
    plus sweep / dataset / arch / rewind point / one-shot-vs-IMP when the frame holds
    several), with standard-error bars (none for a single seed). The x axis is the mean
    measured fraction remaining (nominal when not measured) in percent on a log scale,
    100% on the left and decreasing to the right as in the paper; the y axis is top-1
    in percent. The title names the dataset(s) and architecture(s) unless ``title`` is
    given. With ``by`` (a custom grouping, see :func:`results.query.summarize`) there is
    one line per value of the ``by`` columns and whatever they leave out is pooled. The
    file format follows the suffix of ``out_path`` (PNG when it has none); the file is
    written to a temp file in the same folder and renamed into place.

    Returns the :class:`matplotlib.figure.Figure` (one ``ax.containers`` entry per
    line). Raises :class:`ValueError` on an empty frame.
    """
    figure = top1_figure(df, title, by)
    out_path = Path(out_path)
    file_format = out_path.suffix.lstrip(".").lower() or "png"
    atomic_save_with(Path(out_path), lambda handle: figure.savefig(handle, format=file_format, dpi=150))
    return figure


def top1_figure(df: pd.DataFrame, title: str | None = None, by: Sequence[str] | None = None):
    """The figure :func:`plot_top1_vs_fraction` saves, not saved (``figure.savefig`` writes it anywhere)."""
    from results.top1_drawing import draw

    return draw(top1_curves(df, title, by))


def top1_curves(df: pd.DataFrame, title: str | None = None, by: Sequence[str] | None = None) -> Curves:
    """What :func:`top1_figure` draws, as plain data (:data:`results.top1_drawing.Curves`).

    Per curve: its label, the means and standard errors per fraction with their ``n``, the
    single rows behind them (``points``: the faint dots), and what picks its colour, line style
    and marker: ``mask_source``, ``init`` (or the transfer) and ``rest`` (what else its label
    says: sweep, workspace, rewind point); ``random``: a random mask's curve (no rewinding point),
    left out of the panel zoomed on the trained masks.
    """
    if df is None or len(df) == 0:
        raise ValueError("plot_top1_vs_fraction: no results to plot (the frame is empty)")
    by = curve_grouping(by)
    keys = grouping(df, by)
    summary = summarize(df, by)
    summary = summary.assign(
        setting=setting_labels(summary, by),
        x=summary["measured_fraction"].fillna(summary["nominal_fraction"]) * 100.0,
        y=summary["top1_mean"] * 100.0,
        yerr=summary["top1_se"].fillna(0.0) * 100.0,
    )
    rows = df[keys + ["top1", "measured_fraction", "nominal_fraction"]].loc[:, lambda f: ~f.columns.duplicated()]
    rows = rows.merge(summary[keys + ["setting"]], on=keys, how="left")
    rows = rows.assign(px=rows["measured_fraction"].fillna(rows["nominal_fraction"]) * 100.0, py=rows["top1"] * 100.0)
    lines = []
    for setting in _ordered_settings(summary, by):
        curve = summary[summary["setting"] == setting].sort_values("x", ascending=False)
        single = rows[rows["setting"] == setting]
        lines.append({"label": setting, "x": curve["x"].to_numpy(float).tolist(),
                      "y": curve["y"].to_numpy(float).tolist(), "yerr": curve["yerr"].to_numpy(float).tolist(),
                      "n": [int(n) for n in curve["n"]],
                      "points": {"x": single["px"].to_numpy(float).tolist(),
                                 "y": single["py"].to_numpy(float).tolist()},
                      **_line_style_keys(curve, setting)})
    xs = np.sort(summary["x"].dropna().unique())[::-1]
    low, high = float(xs.min()), float(xs.max())
    few = len(xs) <= MAX_FRACTION_TICKS
    counts = sorted({n for line in lines for n in line["n"]})
    per = "seeds" if by is None else "rows"
    n_text = f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}–{counts[-1]}"
    return {"title": title if title is not None else _default_title(df), "lines": lines,
            "xlim": [high * 1.15, low / 1.15],
            "ticks": xs.tolist() if few else None,
            "tick_labels": [percent_label(x / 100.0) for x in xs.tolist()] if few else None,
            "note": f"mean ± 1 s.e. over {per} ({n_text} {per} per point); faint dots: single {per[:-1]}s"}


def _line_style_keys(curve: pd.DataFrame, label: str) -> dict:
    """``mask_source``, ``init``, ``rest`` and ``random`` of one curve (see :func:`top1_curves`)."""
    def one(column: str) -> str | None:
        values: list[Any] = curve[column].dropna().unique().tolist() if column in curve.columns else []
        return str(values[0]) if len(values) == 1 else None

    source = one("mask_source")
    how = one("transfer") or one("init")
    named = [part for part in (source, how) if part is not None]
    rest = " / ".join(part for part in label.split(" / ") if part not in named)
    # a random mask has no rewinding point; a custom grouping may leave the rewind column out
    random = (source is not None and source.endswith("random")) or bool(
        "rewind" in curve.columns and (curve["rewind"] == NO_REWIND).all())
    return {"mask_source": source, "init": how, "rest": rest, "random": random}


def _default_title(df: pd.DataFrame) -> str:
    """``"Top-1 vs weights remaining: <dataset(s)> / <arch(s)>"``."""
    datasets = ", ".join(map(str, dict.fromkeys(df["dataset"])))
    archs = ", ".join(map(str, dict.fromkeys(df["arch"])))
    return f"Top-1 vs weights remaining: {datasets} / {archs}"

"""Top-1 accuracy vs fraction of weights remaining, drawn like the paper's figures.

matplotlib is imported only when a plot is drawn, so ``import results`` stays light.
The figure is a plain :class:`matplotlib.figure.Figure` rendered by the Agg canvas: no
pyplot, no global figure registry, no display needed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from results.atomic_files import atomic_save_with
from results.query import _ordered_settings, curve_grouping, percent_label, setting_labels, summarize
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
    """What :func:`top1_figure` draws, as plain data (:data:`results.top1_drawing.Curves`)."""
    if df is None or len(df) == 0:
        raise ValueError("plot_top1_vs_fraction: no results to plot (the frame is empty)")
    by = curve_grouping(by)
    summary = summarize(df, by)
    summary = summary.assign(
        setting=setting_labels(summary, by),
        x=summary["measured_fraction"].fillna(summary["nominal_fraction"]) * 100.0,
        y=summary["top1_mean"] * 100.0,
        yerr=summary["top1_se"].fillna(0.0) * 100.0,
    )
    lines = []
    for setting in _ordered_settings(summary, by):
        curve = summary[summary["setting"] == setting].sort_values("x", ascending=False)
        lines.append({"label": setting, "x": curve["x"].to_numpy(float).tolist(),
                      "y": curve["y"].to_numpy(float).tolist(), "yerr": curve["yerr"].to_numpy(float).tolist()})
    xs = np.sort(summary["x"].dropna().unique())[::-1]
    low, high = float(xs.min()), float(xs.max())
    few = len(xs) <= MAX_FRACTION_TICKS
    return {"title": title if title is not None else _default_title(df), "lines": lines,
            "xlim": [high * 1.15, low / 1.15],
            "ticks": xs.tolist() if few else None,
            "tick_labels": [percent_label(x / 100.0) for x in xs.tolist()] if few else None}


def _default_title(df: pd.DataFrame) -> str:
    """``"Top-1 vs weights remaining: <dataset(s)> / <arch(s)>"``."""
    datasets = ", ".join(map(str, dict.fromkeys(df["dataset"])))
    archs = ", ".join(map(str, dict.fromkeys(df["arch"])))
    return f"Top-1 vs weights remaining: {datasets} / {archs}"

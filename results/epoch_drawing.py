"""Drawing the report's per-epoch curves of one workspace's stages of one kind: matplotlib only.

Left: the training loss per epoch; right: the test top-1 (%) where measured. One faint line
per stage (at most ``max_faint`` of them), one bold mean per series over its stages, a colour
per series. The figure's data is a :data:`results.top1_drawing.Curves` of ``"type": "epochs"``
made by :func:`results.report_provenance.epoch_curves`; its style is :mod:`results.figure_style`'s.
"""
from __future__ import annotations

from typing import Any


def _mean_by_epoch(runs: list[dict[str, list]], x: str, y: str) -> tuple[list[float], list[float]]:
    """The mean of ``y`` over the runs at each value of ``x`` that some run has."""
    values: dict[float, list[float]] = {}
    for run in runs:
        for epoch, value in zip(run[x], run[y], strict=True):
            values.setdefault(epoch, []).append(value)
    epochs = sorted(values)
    return epochs, [sum(values[e]) / len(values[e]) for e in epochs]


def draw_epochs(curves: dict[str, Any]):
    """The :class:`matplotlib.figure.Figure` of one workspace's per-epoch curves of one stage kind."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from results.figure_style import FONT, HEIGHT, PALETTE, SVG_SETTINGS, TWO_PANEL_WIDTH, legend_ids

    with matplotlib.rc_context({**FONT, **SVG_SETTINGS}):
        figure = Figure(figsize=(TWO_PANEL_WIDTH, HEIGHT * 0.85), layout="constrained")
        FigureCanvasAgg(figure)
        loss_ax, test_ax = figure.subplots(1, 2, sharex=True)  # the test panel keeps the epochs of the loss
        faint_left = int(curves.get("max_faint", 60))
        handles = []
        for number, series in enumerate(curves["series"]):
            colour = PALETTE[number % len(PALETTE)]
            for run in series["stages"]:
                if faint_left <= 0:
                    break
                faint_left -= 1
                loss_ax.plot(run["epoch"], run["train_loss"], color=colour, alpha=0.25, linewidth=1)
                test_ax.plot(run["test_epoch"], run["test"], color=colour, alpha=0.35, linewidth=0, marker="o",
                             markersize=4)
            epochs, loss = _mean_by_epoch(series["stages"], "epoch", "train_loss")
            handles += loss_ax.plot(epochs, loss, color=colour, linewidth=2.5, marker="o", markersize=4,
                                    label=series["label"], gid=f"curve-{number}-p0")
            epochs, test = _mean_by_epoch(series["stages"], "test_epoch", "test")
            test_ax.plot(epochs, test, color=colour, linewidth=0, marker="D", markersize=8,
                         markeredgecolor="black")
        loss_ax.set_title("Training loss")
        loss_ax.set_ylabel("loss (mean over the epoch)")
        test_ax.set_title("Test top-1 (a pretext task: its own accuracy), where measured")
        test_ax.set_ylabel("test accuracy (%)")
        for ax in (loss_ax, test_ax):
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        figure.suptitle(curves["title"])
        labels = [series["label"] for series in curves["series"]]
        legend = figure.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4),
                               frameon=False, title="bold: mean over the series' stages; faint: single stages")
        legend_ids(legend, labels)
    return figure

"""What the report's figures share: their size, text, colours, line styles and the ids a browser reads.

matplotlib is imported only inside :func:`legend_ids`; the rest is plain data.
"""
from __future__ import annotations

from typing import Any

#: the width of a figure of two panels, in inches (one panel: :data:`ONE_PANEL_WIDTH`), and its height.
TWO_PANEL_WIDTH, ONE_PANEL_WIDTH, HEIGHT = 13.0, 7.5, 5.6
#: the text, in points: at the report's width (about 1,330 CSS pixels for 13 inches) a point is 1.4 px.
FONT: dict[Any, Any] = {"font.size": 11.5, "axes.titlesize": 13, "axes.labelsize": 12.5,
                         "xtick.labelsize": 11.5, "ytick.labelsize": 11.5, "legend.fontsize": 11.5,
                         "legend.title_fontsize": 11.5, "figure.titlesize": 14}
#: one line style per init (how the masked network starts), then these for any other.
INIT_STYLES = {"winning_ticket": "-", "reinit": "--", "pretrained": ":"}
OTHER_STYLES = ("-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)))
#: one marker per remaining part of a label (sweep, workspace, rewind point)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: trained mask sources take the colours in turn; random masks are grey, as in the paper
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
RANDOM_COLOURS = ("#555555", "#999999")
#: the SVG ids are the same for the same figure (the page is the same whichever process drew it)
SVG_SETTINGS: dict[Any, Any] = {"svg.hashsalt": "prunesweep", "svg.fonttype": "none", "font.family": "DejaVu Sans"}


def legend_ids(legend, labels: list[str]) -> None:
    """Name each legend entry's text and line after its curve (``legend-text-<i>``, ``legend-line-<i>``), so
    that a browser can tell which curve an entry stands for."""
    from matplotlib.lines import Line2D

    for column in legend._legend_handle_box.get_children():  # entries: (handle area, text area)
        for entry in column.get_children():
            area, text_area = entry.get_children()
            text = text_area.get_children()[0]
            index = labels.index(text.get_text())
            text.set_gid(f"legend-text-{index}")
            for artist in area.get_children():
                if isinstance(artist, Line2D) and artist.get_linestyle() not in ("None", ""):
                    artist.set_gid(f"legend-line-{index}")

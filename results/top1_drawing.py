"""Drawing the top-1 vs fraction-remaining figure from its curves: matplotlib and numpy only.

:mod:`results.plot` turns a results frame into :data:`Curves` (pandas) and :func:`draw` makes
the figure, as the paper's Fig. 3: log x axis of the fraction remaining, a colour per mask
source, a line style per init, the single seeds as faint dots behind the means and their
± 1 s.e. bars, and a second panel fitted to the trained masks alone when random masks (whose
collapse sets the first panel's y axis) are among the curves.

A report draws in a second process instead (:class:`DrawingProcess`), as SVG: started before
the report reads its rows, it imports matplotlib (about half a second) on another core while
the report reads, summarizes and compares, then draws the curves it is sent. Where that
process cannot start or fails, the report draws them itself: the same bytes.

    python -m results.top1_drawing   # the second process: JSON request on stdin, images on stdout
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from results.figure_style import (
    FONT,
    HEIGHT,
    INIT_STYLES,
    MARKERS,
    ONE_PANEL_WIDTH,
    OTHER_STYLES,
    PALETTE,
    RANDOM_COLOURS,
    SVG_SETTINGS,
    TWO_PANEL_WIDTH,
    legend_ids,
)

#: ``{"title": str, "note": str, "lines": [{"label", "x", "y", "yerr", "n", "points": {"x", "y"}, "mask_source",
#: "init", "rest", "random"}], "xlim": [left, right], "ticks": [x...] | None, "tick_labels": [str...] | None}``:
#: x and y in percent (:func:`results.plot.top1_curves`); or, with ``"type": "epochs"``, the per-epoch
#: curves of :mod:`results.epoch_drawing`.
Curves = dict[str, Any]


def _styles(lines: list[dict]) -> list[dict]:
    """Colour per mask source, line style per init, marker per remaining label part."""
    colours: dict[str, str] = {}
    randoms = iter(RANDOM_COLOURS * len(lines))
    trained = iter(PALETTE * len(lines))
    styles: dict[str, Any] = dict(INIT_STYLES)
    others = iter(OTHER_STYLES * len(lines))
    markers: dict[str, str] = {}
    picked = []
    for index, line in enumerate(lines):
        source = line.get("mask_source") or line["label"]
        if source not in colours:
            colours[source] = next(randoms) if line.get("random") else next(trained)
        init = line.get("init")
        if init is not None and init not in styles:
            styles[init] = next(others)
        rest = line.get("rest", "")
        markers.setdefault(rest, MARKERS[len(markers) % len(MARKERS)])
        picked.append({"color": colours[source], "linestyle": styles.get(init, "-") if init else "-",
                       "marker": markers[rest], "gid": f"curve-{index}"})
    return picked


def draw(curves: Curves):
    """The :class:`matplotlib.figure.Figure` of ``curves``: all curves on the left (one ``ax.containers``
    entry per line), and, when random masks are among them, the trained masks alone on the right,
    their y axis fitted to them. A legend below, titled with what the bars are and ``n``."""
    if curves.get("type") == "epochs":
        from results.epoch_drawing import draw_epochs

        return draw_epochs(curves)
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines = curves["lines"]
    zoom = any(line.get("random") for line in lines) and not all(line.get("random") for line in lines)
    with matplotlib.rc_context({**FONT, **SVG_SETTINGS}):
        figure = Figure(figsize=(TWO_PANEL_WIDTH if zoom else ONE_PANEL_WIDTH, HEIGHT), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, 2 if zoom else 1, squeeze=False)[0]
        styles = _styles(lines)
        for panel, ax in enumerate(axes):
            shown = [i for i, line in enumerate(lines) if panel == 0 or not line.get("random")]
            for i in shown:
                _draw_line(ax, lines[i], styles[i], panel)
            _axis(ax, curves, panel, zoom, [lines[i] for i in shown])
        figure.suptitle(curves["title"])
        handles = [container for container in axes[0].containers]
        legend = figure.legend(handles, [line["label"] for line in lines], loc="outside lower center",
                               ncols=min(len(lines), 3 if zoom else 2), title=curves.get("note"), frameon=False)
        legend_ids(legend, [line["label"] for line in lines])
    return figure


def _draw_line(ax, line: dict, style: dict, panel: int) -> None:
    points = line.get("points") or {"x": [], "y": []}
    ax.scatter(points["x"], points["y"], s=16, color=style["color"], alpha=0.3, linewidths=0, zorder=1)
    container = ax.errorbar(line["x"], line["y"], yerr=line["yerr"], color=style["color"],
                            linestyle=style["linestyle"], marker=style["marker"], markersize=5, capsize=3.5,
                            linewidth=2, label=line["label"], zorder=2)
    container.lines[0].set_gid(f"{style['gid']}-p{panel}")


def _axis(ax, curves: Curves, panel: int, zoom: bool, shown: list[dict]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(*curves["xlim"])  # reversed: 100% on the left
    if curves.get("ticks") is not None:
        labels = dict(zip(curves["ticks"], curves["tick_labels"], strict=True))
        ax.xaxis.set_major_locator(FixedLocator(curves["ticks"]))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: labels.get(value, f"{value:g}%")))
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}%"))
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("Fraction of weights remaining (log scale)")
    ax.set_ylabel("Top-1 accuracy (%)" if panel == 0 else "Top-1 accuracy (%), zoomed")
    if zoom:
        ax.set_title("All masks" if panel == 0 else "Trained masks (random masks left out)")
    if panel == 1:  # fitted to the trained masks' bars and single runs, so their differences show
        low = min(min(y - e for y, e in zip(line["y"], line["yerr"], strict=True)) for line in shown)
        high = max(max(y + e for y, e in zip(line["y"], line["yerr"], strict=True)) for line in shown)
        dots = [y for line in shown for y in (line.get("points") or {}).get("y", [])]
        low, high = min([low, *dots]), max([high, *dots])
        pad = max(high - low, 0.5) * 0.08
        ax.set_ylim(low - pad, high + pad)
    ax.grid(True, which="major", alpha=0.3)


def png(curves: Curves, dpi: int) -> bytes:
    """The figure of ``curves`` as PNG bytes."""
    import io

    buffer = io.BytesIO()
    draw(curves).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def image(curves: Curves, dpi: Optional[int] = None) -> bytes:
    """The figure of ``curves`` as SVG (``dpi`` None) or PNG bytes."""
    return svg(curves) if dpi is None else png(curves, int(dpi))


def svg(curves: Curves) -> bytes:
    """The figure of ``curves`` as SVG bytes: text as text (readable at any size, measurable in a browser),
    the same bytes for the same curves."""
    import io

    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context(SVG_SETTINGS):
        draw(curves).savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


class DrawingProcess:
    """A second Python process that imports matplotlib now and draws the figures :meth:`send` gives it."""

    def __init__(self) -> None:
        package_parent = str(Path(__file__).resolve().parent.parent)  # where `results` is, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent,
                                                                          os.environ.get("PYTHONPATH")]))}
        try:
            self._process: Optional[subprocess.Popen] = subprocess.Popen(
                [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=env)
        except OSError:
            self._process = None
        self._sent = 0

    def send(self, figures: list[Curves], dpi: Optional[int] = None) -> None:
        """Hand over every figure to draw (once), as SVG (``dpi`` None) or PNG; :meth:`images` collects them."""
        if self._process is None or self._process.stdin is None:
            return
        try:
            self._process.stdin.write(json.dumps({"figures": figures, "dpi": dpi}).encode())
            self._process.stdin.close()
            self._sent = len(figures)
        except OSError:  # it died: the caller draws the figures itself
            self.close()

    def images(self) -> Optional[list[bytes]]:
        """The images of the figures sent, in order, or None when the process failed (draw them here)."""
        if self._process is None or self._process.stdout is None:
            return None
        try:
            answer = self._process.stdout.read()
            if self._process.wait() != 0:
                return None
            images = [base64.b64decode(image) for image in json.loads(answer)]
        except (OSError, ValueError, TypeError):
            return None
        finally:
            self.close()
        return images if len(images) == self._sent else None

    def close(self) -> None:
        """Stop the process (if it still runs) and wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def _serve() -> None:
    """The second process: import matplotlib, then draw the request read from stdin."""
    import matplotlib.backends.backend_agg  # noqa: F401  (the half second this process is for)
    import matplotlib.figure  # noqa: F401

    request = json.loads(sys.stdin.buffer.read())
    images = [base64.b64encode(image(curves, request["dpi"])).decode("ascii") for curves in request["figures"]]
    sys.stdout.write(json.dumps(images))


if __name__ == "__main__":
    _serve()

"""Drawing the top-1 vs fraction-remaining figure from its curves: matplotlib and numpy only.

:mod:`results.plot` turns a results frame into :data:`Curves` (pandas) and :func:`draw` makes
the figure. A report draws in a second process instead (:class:`DrawingProcess`): started
before the report reads its rows, it imports matplotlib (about half a second) on another
core while the report reads, summarizes and compares, then draws the curves it is sent.
Where that process cannot start or fails, the report draws them itself: same figures.

    python -m results.top1_drawing   # the second process: JSON request on stdin, PNGs on stdout
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

#: ``{"title": str, "lines": [{"label", "x", "y", "yerr"}], "xlim": [left, right],
#: "ticks": [x...] | None, "tick_labels": [str...] | None}``: x and y in percent.
Curves = dict[str, Any]


def draw(curves: Curves):
    """The :class:`matplotlib.figure.Figure` of ``curves`` (one ``ax.containers`` entry per line)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    figure = Figure(figsize=(7.0, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for line in curves["lines"]:
        ax.errorbar(line["x"], line["y"], yerr=line["yerr"], marker="o", markersize=4, capsize=3, linewidth=1.5,
                    label=line["label"])
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
    ax.set_xlabel("Fraction of weights remaining (%)")
    ax.set_ylabel("Top-1 accuracy (%)")
    ax.set_title(curves["title"])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return figure


def png(curves: Curves, dpi: int) -> bytes:
    """The figure of ``curves`` as PNG bytes."""
    import io

    buffer = io.BytesIO()
    draw(curves).savefig(buffer, format="png", dpi=dpi)
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

    def send(self, figures: list[Curves], dpi: int) -> None:
        """Hand over every figure to draw (once); :meth:`pngs` collects them."""
        if self._process is None or self._process.stdin is None:
            return
        try:
            self._process.stdin.write(json.dumps({"figures": figures, "dpi": dpi}).encode())
            self._process.stdin.close()
            self._sent = len(figures)
        except OSError:  # it died: the caller draws the figures itself
            self.close()

    def pngs(self) -> Optional[list[bytes]]:
        """The PNGs of the figures sent, in order, or None when the process failed (draw them here)."""
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
    images = [base64.b64encode(png(curves, int(request["dpi"]))).decode("ascii") for curves in request["figures"]]
    sys.stdout.write(json.dumps(images))


if __name__ == "__main__":
    _serve()

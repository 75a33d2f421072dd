"""A frame as text, exactly as ``DataFrame.to_string(index=False)`` writes it, at a fraction of the cost.

pandas formats each value of a column one by one (100,000 of them for ``prunesweep results``'
summary: most of that command's time, issue 16), yet what a column looks like depends only on
the set of its values: the width, the decimals shown, fixed or scientific notation, the
header's place; never on their order or on how often each comes. So each column is written
by pandas itself from one row per distinct value (the first row holding it), and every row
takes the text of its value. A frame this reasoning does not cover (labels that are not plain
text, a header or value over several lines) or too small to gain is left to ``to_string``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: up to this many rows pandas writes the frame at once: a column written twice costs more than it saves
SMALL = 500


def frame_text(frame: pd.DataFrame, na_rep: str = "NaN") -> str:
    """``frame.to_string(index=False, na_rep=na_rep)`` under the current pandas display options."""
    import pandas as pd

    if not _by_distinct_values(frame, pd):
        return frame.to_string(index=False, na_rep=na_rep)
    columns = []
    for position in range(frame.shape[1]):
        fixed = _fixed_point(frame.iloc[:, position], pd, na_rep)
        if fixed is not None:
            columns.append(fixed)
            continue
        codes, firsts = _distinct(frame.iloc[:, position], pd)
        lines = frame.iloc[firsts, [position]].to_string(index=False, na_rep=na_rep).split("\n")
        if len(lines) != len(firsts) + 1:  # a header or value over several lines: not one line per row
            return frame.to_string(index=False, na_rep=na_rep)
        cells = _object_array(lines[1:])
        columns.append([lines[0], *cells[codes].tolist()])
    return "\n".join(" ".join(cells) for cells in zip(*columns, strict=True))


def _by_distinct_values(frame: pd.DataFrame, pd: Any) -> bool:
    """Whether ``frame`` has many rows and plain text labels (``to_string`` never leaves a row or column out)."""
    if len(frame) <= SMALL or isinstance(frame.columns, pd.MultiIndex) or not frame.columns.is_unique:
        return False
    return all(isinstance(label, str) and label == label.strip() and label.isprintable() for label in frame.columns)


def _fixed_point(series: pd.Series, pd: Any, na_rep: str = "NaN") -> list[str] | None:
    """The header and cells of a float column as pandas writes it in fixed-point notation, when it does
    under its default display options; None otherwise (pandas writes it).

    That is each value with ``display.precision`` decimals, less the trailing zeros every value has
    (one decimal at least), ``na_rep`` for a missing one, right-aligned under the label led by a blank:
    the text of a column of means where each value is distinct.
    """
    import numpy as np

    if not (isinstance(series.dtype, np.dtype) and series.dtype == np.float64):
        return None
    unset = ("display.float_format", "display.chop_threshold")
    if (any(pd.get_option(option) is not None for option in unset) or pd.get_option("display.unicode.east_asian_width")
            or pd.get_option("display.colheader_justify") != "right"):
        return None
    values = series.to_numpy()
    precision = pd.get_option("display.precision")
    magnitudes = np.abs(values)
    if (magnitudes > 1e6).any() or ((magnitudes < 10 ** (-precision)) & (magnitudes > 0)).any():
        return None  # pandas may write the column in scientific notation
    texts = [None if value != value else f"{value:.{precision}f}" for value in values.tolist()]
    numbers = [text for text in texts if text is not None] if precision > 0 else []
    if numbers:
        decimals = max(len(text.rstrip("0")) - text.index(".") - 1 for text in numbers)
        cut = precision - max(decimals, 1)
        if cut:
            texts = [text if text is None else text[:-cut] for text in texts]
    cells = [na_rep if text is None else text for text in texts]
    header = " " + str(series.name)
    width = max(len(header), max(map(len, cells)))
    limit = pd.get_option("display.max_colwidth")
    if limit is not None and width > limit:
        return None
    return [header.rjust(width), *(cell.rjust(width) for cell in cells)]


def _distinct(series: pd.Series, pd: Any) -> tuple[Any, Any]:
    """A code per row for the distinct values of ``series`` as pandas prints them (equal codes: equal text),
    and the position of the first row of each code, in code order."""
    import numpy as np

    values = series.array
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        # by their bits: 0.0 and -0.0 are equal but printed apart; NaNs print alike whatever their bits
        keys = np.ascontiguousarray(series.to_numpy()).view(f"i{dtype.itemsize}")
    elif isinstance(dtype, np.dtype) and dtype.kind in "iub" or isinstance(dtype, (pd.StringDtype, pd.Int64Dtype,
                                                                                        pd.BooleanDtype)):
        keys = values
    else:  # objects: 1, 1.0 and True are equal but printed apart; the type and repr tell them apart
        keys = np.array([f"{type(value).__module__}.{type(value).__qualname__}:{value!r}" for value in values],
                        dtype=object)
    codes, _ = pd.factorize(keys, use_na_sentinel=False)
    _, firsts = np.unique(codes, return_index=True)
    return codes, firsts


def _object_array(items: list[str]) -> Any:
    import numpy as np

    cells = np.empty(len(items), dtype=object)
    cells[:] = items
    return cells

"""The frame a reading loads: rows of a results table (values as SQLite gives them) as pandas
columns of the loaded frame's dtypes, built fast (issue 16).

pandas is imported inside the functions, not with the module: recording rows (the driver,
``status``) never needs it, and it costs a third of a second and 85 MB per command.
"""
from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from results.row import COLUMN_TYPES, COLUMNS, mistyped_value

if TYPE_CHECKING:
    import pandas as pd


def pandas_dtypes() -> tuple[Any, dict[str, Any]]:
    """pandas and the dtypes of the loaded frame: nullable integers (level is NULL for one-shot),
    floats, and pandas' default string dtype ("str" in pandas 3, object before).

    pandas is imported here, not with the module: recording rows (the driver, ``status``)
    never needs it, and it costs a third of a second and 85 MB per command (issue 16).
    """
    import pandas as pd

    text = pd.Series(["x"]).dtype
    return text, {"TEXT": text, "INTEGER": "Int64", "REAL": "float64"}


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while (as it was after).

    The rows read are tuples of numbers and text, which make no cycles; yet every few hundred
    new tuples the collector walks the objects tracked so far: a third of the time of turning
    100,000 rows into a frame (issue 16).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def frame_of_rows(rows: list[tuple], columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """The loaded frame of table rows (values of ``columns``, in schema order) with their pandas dtypes.

    Built a column at a time from the values as SQLite gives them (a text column straight into
    pyarrow, which pandas' string dtype wraps as it is): a third of the time of converting
    rows of Python objects into a frame and then each column to its dtype (issue 16).
    """
    import pandas as pd

    text, dtypes = pandas_dtypes()
    try:
        values = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
        with warnings.catch_warnings():  # numpy's warning of a cast that fails: the failure is said below
            warnings.simplefilter("ignore", RuntimeWarning)
            return pd.DataFrame({name: _array(column_values, COLUMN_TYPES[name], text)
                                 for name, column_values in zip(columns, values, strict=True)})
    except (TypeError, ValueError, OverflowError):  # a value no column type takes (damaged behind our back)?
        damaged = mistyped_value(rows, columns)
        if damaged is not None:
            raise damaged from None
        frame = pd.DataFrame.from_records(rows, columns=list(columns))
        return frame.astype({name: dtypes[COLUMN_TYPES[name]] for name in columns})


def _array(values: Sequence[Any], sqltype: str, text: Any) -> Any:
    """One column of the loaded frame from its values (None for NULL)."""
    import numpy as np
    import pandas as pd

    if sqltype == "REAL":
        return np.array(values, dtype=np.float64)  # NULL (None) becomes NaN, as astype("float64") makes it
    if sqltype == "INTEGER":
        return pd.array(values, dtype="Int64")
    return text_array(values, text)


def text_array(values: Sequence[Any], text: Any) -> Any:
    """A text column of the loaded frame (pandas' string dtype ``text``) from str or None values."""
    import pandas as pd

    if getattr(text, "storage", None) == "pyarrow":
        import pyarrow as pa

        try:
            return pd.array(pa.array(values, type=pa.large_string()), dtype=text)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all str: pandas converts them as before
            pass
    return pd.array(values, dtype=text)

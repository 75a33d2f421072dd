"""Results of a prunesweep workspace: record, load, filter, summarize, compare,
tabulate, plot, export.

Typical use::

    import results
    df = results.load("runs/digits")                      # one row per evaluated cell
    df = results.filter_rows(df, ["init=winning_ticket"])  # --where filters
    results.summarize(df)                                  # mean / s.e. / n per setting
    results.pivot(df)                                      # fraction x "mask_source / init"
    results.compare(df, "mask_source", "labels", "rotnet")  # paired differences over seeds, t-test
    both = results.load(["runs/a", "runs/b"])              # one frame, with a workspace column
    results.plot_top1_vs_fraction(df, "top1.png")

The table lives in ``WORKSPACE/results.sqlite`` (see :mod:`results.table`); a row is
defined in :mod:`results.row` and the table's schema history in :mod:`results.migrations`.
This package never imports torch (nor ``workers`` or the orchestrator), matplotlib
only when a plot is drawn and scipy only when a comparison is made.
"""
import importlib
from typing import Any

#: public name -> the module that defines it; a module is imported when one of its names is
#: first used, so `import results.row` (the planner) or a reading command pulls in pandas,
#: matplotlib or scipy only when it needs them.
_EXPORTS = {
    "compare": "comparison",
    "export_csv": "export", "export_parquet": "export",
    "plot_top1_vs_fraction": "plot",
    "filter_rows": "conditions",
    "SETTING_COLUMNS": "query", "grouping": "query", "pivot": "query",
    "setting_columns": "query", "summarize": "query",
    "build_row": "row", "dense_ancestor": "row", "NO_REWIND": "row",
    "COLUMNS": "table", "PRIMARY_KEY": "table", "db_path": "table", "load": "table", "record": "table",
    "Recorder": "table", "recorded_among": "table", "recorded_cells": "table", "upgrade": "table",
    "StoreVersionError": "versioned_sqlite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'results' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

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
from .compare import compare
from .export import export_csv, export_parquet
from .plot import plot_top1_vs_fraction
from .query import SETTING_COLUMNS, filter_rows, grouping, pivot, setting_columns, summarize
from .row import build_row, dense_ancestor
from .table import COLUMNS, PRIMARY_KEY, db_path, load, record, recorded_cells, upgrade
from .versioned_sqlite import StoreVersionError

__all__ = [
    "COLUMNS",
    "PRIMARY_KEY",
    "SETTING_COLUMNS",
    "StoreVersionError",
    "build_row",
    "compare",
    "db_path",
    "dense_ancestor",
    "export_csv",
    "export_parquet",
    "filter_rows",
    "grouping",
    "load",
    "pivot",
    "plot_top1_vs_fraction",
    "record",
    "setting_columns",
    "recorded_cells",
    "summarize",
    "upgrade",
]

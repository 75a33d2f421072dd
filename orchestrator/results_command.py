"""``prunesweep results``: the central table, summarised, pivoted, plotted or exported."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

import results

from .errors import UserError
from .ledger import Ledger
from .reconcile import ingest_results, reconcile


def show_results(workspace: Path, args) -> int:
    """Print the summary (or pivot) and write the plot/exports the arguments ask for."""
    ledger = Ledger(workspace, reading=True)
    try:
        ingest_results(workspace, ledger, reconcile(workspace, ledger))
    finally:
        ledger.close()
    frame = results.load(workspace)
    where = list(args.where) + ([f"sweep={args.sweep}"] if args.sweep else [])
    try:
        frame = results.filter_rows(frame, where)
    except ValueError as error:
        raise UserError(f"--where: {error}") from None
    if frame.empty:
        print(f"{workspace}: no results yet" + (" match the filters" if where else ""))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_rows", None):
        if args.pivot:
            print(results.pivot(frame).to_string())
        else:
            print(results.summarize(frame).to_string(index=False))
    for path, write in ((args.csv, results.export_csv), (args.parquet, results.export_parquet)):
        if path:
            write(frame, Path(path))
            print(f"wrote {len(frame)} rows to {path}")
    if args.plot:
        results.plot_top1_vs_fraction(frame, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0

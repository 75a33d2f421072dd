"""``prunesweep results``: the results table of one workspace or several, queried, summarised,
pivoted, compared, plotted or exported."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

import results
from orchestrator.commands.wording import count
from orchestrator.errors import UserError
from orchestrator.state.ledger import Ledger
from orchestrator.state.reconcile import bring_results_up_to_date
from orchestrator.state.store_health import damaged_value, table_refusals
from results.comparison import Comparison, compare, format_comparison, parse_compare
from results.conditions import text_equalities
from results.filter_values import value_in_no_row
from results.frame_text import frame_text
from results.hints import did_you_mean
from results.query import columns_needed, grouping
from results.row import COLUMN_TYPES, DamagedValue
from results.workspace_labels import check_labels, relabel


def show_results(workspaces: Sequence[Path], args) -> int:
    """Print the summary, pivot or comparison and write the plot/exports the arguments ask for.

    Each workspace is first brought up to date as a single one is (stages reconciled with
    their artifacts, finished cells recorded) through a reading ledger, which writes only
    where a reading ``results`` of that one workspace would (elsewhere the cells it could not
    record are shown from an in-memory copy of the table). Several workspaces are read
    as one frame with a ``workspace`` column (:func:`results.load` of the list), each workspace
    labelled by ``--label`` or its folder's name (:mod:`results.workspace_labels`).
    """
    workspaces = list(workspaces)
    labels = labels_argument(args, workspaces)
    from results.export import target_problem  # pandas-free: checked before anything is read or written

    for option, target in (("--csv", args.csv), ("--parquet", args.parquet), ("--plot", args.plot)):
        problem = target_problem(target, [Path(w) for w in workspaces], plot=option == "--plot") if target else None
        if problem:
            raise UserError(f"{option}: {problem}")
    pending = {}  # rows of cells finished since the last writer, in a workspace this command must not write
    for workspace in workspaces:
        ledger = Ledger(workspace, reading=True)
        try:
            pending[workspace] = bring_results_up_to_date(workspace, ledger)
        finally:
            ledger.close()
    read = workspaces[0] if len(workspaces) == 1 else workspaces

    def load(**reading):
        with table_refusals():
            try:
                return relabel(results.load(read, pending=pending, **reading), labels)
            except DamagedValue as error:
                raise damaged_value(error) from None

    frame = load(**_reading(args, several=len(workspaces) > 1))
    return _present(frame, ", ".join(map(str, workspaces)), args, whole=lambda columns: load(columns=columns))


def labels_argument(args, workspaces: Sequence[Path]) -> dict[str, str] | None:
    """The workspaces' ``--label`` values (workspace as read -> label), checked; None when there is none."""
    if not getattr(args, "label", None):
        return None
    try:
        return check_labels(args.label, [str(workspace) for workspace in workspaces])
    except ValueError as error:
        raise UserError(f"--label: {error}") from None


def _reading(args, several: bool) -> dict:
    """What of the tables the arguments use (:func:`results.load`'s ``only`` and ``columns``): the rows
    their text equalities keep (``--sweep S``) and, unless a file of every column is exported, the
    columns their filters, grouping, plot and comparison read. The frame then prints, plots and
    compares as the whole one would, at a fraction of the cost of reading 100,000 rows (issue 16)."""
    where = list(args.where) + ([f"sweep={args.sweep}"] if args.sweep else [])
    columns = (["workspace"] if several else []) + list(results.COLUMNS)
    text = [column for column, sqltype in COLUMN_TYPES.items() if sqltype == "TEXT"]
    reading: dict = {"only": text_equalities(where, columns, text)}
    if not (args.csv or args.parquet):
        try:
            by, comparison = _group_by(args.group_by), _compare_argument(args.compare)
        except UserError:  # said by _present, after the whole table is read
            return reading
        reading["columns"] = columns_needed(where, by, comparison[0] if comparison else None, columns)
    return reading


def show_central_results(args) -> int:
    """``results --db URL`` (or ``results`` alone with a database configured): the same
    summaries, pivots, comparisons, plots and exports over the lab's central database,
    with no workspace at hand (:func:`results.central_db.load`)."""
    from orchestrator.state.central_results import ENV_VAR, config_file, configured_elsewhere
    from results import central_db

    if args.db is not None and args.workspaces:
        raise UserError("results: give WORKSPACE... or --db URL, not both")
    if args.label:
        raise UserError("--label: names the WORKSPACE arguments in their order; the database's workspaces are "
                        "labelled by their folder names")
    url = args.db if args.db is not None else configured_elsewhere()
    if url is None:
        raise UserError(f"results: give one or more WORKSPACE, or --db URL (or set {ENV_VAR} or results_db in "
                        f"{config_file()})")
    try:
        central_db.check_url(url)
    except ValueError as error:
        raise UserError(f"--db: {error}") from None
    from results.export import target_problem

    for option, target in (("--csv", args.csv), ("--parquet", args.parquet), ("--plot", args.plot)):
        problem = target_problem(target, [], plot=option == "--plot") if target else None
        if problem:
            raise UserError(f"{option}: {problem}")
    try:
        frame = relabel(central_db.load(url))
    except central_db.CentralDbError as error:
        raise UserError(f"--db: {error}") from None
    return _present(frame, central_db.shown(url), args, whole=lambda columns: frame[columns])


def _present(frame: pd.DataFrame, names: str, args, whole: Callable[[list[str]], pd.DataFrame]) -> int:
    """Filter, summarize, pivot, compare, plot and export ``frame`` as the arguments ask; ``whole(columns)``
    gives those columns of every row of the table (``frame`` may be only the rows the filters keep)."""
    where = list(args.where) + ([f"sweep={args.sweep}"] if args.sweep else [])
    by = _group_by(args.group_by)
    comparison = _compare_argument(args.compare)
    try:
        kept = results.filter_rows(frame, where)
    except ValueError as error:
        raise UserError(f"--where: {error}") from None
    refuse_values_in_no_row(where, frame, whole, args.sweep)
    frame = kept
    try:
        grouping(frame, by)
    except ValueError as error:
        raise UserError(f"--group-by: {error}") from None
    if comparison is not None and comparison[0] not in frame.columns:
        allowed = list(map(str, frame.columns))
        raise UserError(f"--compare: unknown column {comparison[0]!r}{did_you_mean(comparison[0], allowed)}; "
                        f"allowed columns: {', '.join(allowed)}")
    if frame.empty:
        print(f"{names}: no results yet" + (" match the filters" if where else ""))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_rows", None):
        if args.pivot:
            try:
                table = results.pivot(frame, by=by)
            except ValueError as error:  # two settings in one cell: the message names the --where to add
                raise UserError(str(error)) from None
            print(table.to_string())
        elif comparison is None:
            summary = results.summarize(frame, by)
            print(summary_text(summary))
            if summary.attrs.get("averaged"):
                print(f"note: {summary.attrs['averaged']} row(s) repeating a group's seed (the same seed in several "
                      "workspaces or pooled settings) were averaged into one: n counts seeds, none twice")
    if comparison is not None:
        try:
            outcome = compare(frame, comparison.column, comparison.a, comparison.b, by=by,
                              alternative=comparison.alternative)
        except ValueError as error:
            raise UserError(f"--compare: {error}") from None
        if args.pivot:
            print()
        print(format_comparison(outcome))
    for path, write in ((args.csv, results.export_csv), (args.parquet, results.export_parquet)):
        if path:
            write(frame, Path(path))
            print(f"wrote {count(len(frame), 'row')} to {path}")
    if args.plot:
        results.plot_top1_vs_fraction(frame, Path(args.plot), by=by)
        print(f"wrote {args.plot}")
    return 0


def refuse_values_in_no_row(where: list[str], frame: pd.DataFrame, whole: Callable[[list[str]], pd.DataFrame],
                            sweep: str | None) -> None:
    """Exit 2 when a value of a ``--where`` (or ``--sweep``) filter is held by no row of the table, naming the
    values there are (:func:`results.filter_values.value_in_no_row`); a typo would otherwise match nothing, silently."""
    absent = value_in_no_row(where, frame, whole) if where else None
    if absent is not None:
        text, problem = absent
        option = "--sweep" if sweep is not None and text == f"sweep={sweep}" else "--where"
        raise UserError(f"{option}: filter {text!r}: {problem}")


def summary_text(summary: pd.DataFrame) -> str:
    """A summary as ``results`` prints it: top-1 and its standard error in percent with one decimal, as the
    pivot's cells show them, and ``-`` for a missing value."""
    import numpy as np

    shown = summary.copy()
    for column in ("top1_mean", "top1_se"):
        with np.errstate(over="ignore"):  # a damaged row's huge value prints as inf, as it is
            percent = 100 * shown[column].to_numpy(dtype=float)
        rounded = {value: float(f"{value:.1f}") for value in np.unique(percent[~np.isnan(percent)]).tolist()}
        shown[column] = pd.Series(percent, index=shown.index).map(rounded)
    for column in shown.columns:  # a nullable integer column prints a missing value as <NA> whatever na_rep says
        if isinstance(shown[column].dtype, pd.Int64Dtype) and shown[column].isna().any():
            shown[column] = shown[column].astype("str")
    return frame_text(shown.rename(columns={"top1_mean": "top1_mean_%", "top1_se": "top1_se_%"}), na_rep="-")


def _group_by(values: Sequence[str]) -> list[str] | None:
    """The columns of every ``--group-by`` (each comma-separated), or None when there is none."""
    if not values:
        return None
    columns = [column.strip() for value in values for column in value.split(",")]
    if not all(columns):
        raise UserError(f"--group-by: {','.join(values)!r}: expected column names separated by commas")
    return columns


def _compare_argument(text: str | None) -> Comparison | None:
    """``--compare COLUMN=A,B`` (or ``A>B``, ``A<B``); exit 2 when malformed."""
    if text is None:
        return None
    try:
        return parse_compare(text)
    except ValueError as error:
        raise UserError(f"--compare: {error}") from None

"""``prunesweep report``: one self-contained HTML page of one workspace or several.

This module reads what the ledgers know (sweeps, stage states, failures and their logs,
missing cells) into :class:`results.report.WorkspaceState` values; :mod:`results.report`
draws the page. Only the ``report`` command imports it: planning, launching and ``status``
never load pandas or matplotlib through it.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import results
from orchestrator.backends import BACKENDS, backend_class
from orchestrator.commands.results import labels_argument, refuse_values_in_no_row
from orchestrator.commands.wording import count
from orchestrator.errors import UserError
from orchestrator.state.ledger import STATES, Ledger
from orchestrator.state.reconcile import bring_results_up_to_date, file_tail, log_tail
from orchestrator.state.store_health import damaged_value, table_refusals
from results.comparison import Comparison, parse_compare
from results.conditions import text_equalities
from results.export import target_problem
from results.hints import did_you_mean
from results.report import FailedStage, WorkspaceState, build_report, page_columns, report_target_problem, write_report
from results.row import COLUMN_TYPES, DamagedValue
from results.top1_drawing import DrawingProcess
from results.workspace_labels import relabel

#: at most this many stages' provenance.json, and this many per kind of epochs.jsonl, are read per workspace.
MAX_READ = 2000


def make_report(workspaces: Sequence[Path], args) -> int:
    """Check the target and the options, bring every workspace up to date as ``results`` does, read
    its ledger and rows, and write the page to ``args.output``; nothing is written on bad input."""
    workspaces = list(dict.fromkeys(workspaces))
    problem = target_problem(args.output, list(workspaces)) or report_target_problem(args.output)
    if problem:
        raise UserError(f"-o: {problem}")
    comparisons = _comparisons(args.compare)
    labels_argument(args, workspaces)  # checked before anything is read
    drawer = DrawingProcess()  # imports matplotlib on another core while the rows are read
    try:
        return _make_report(workspaces, args, comparisons, drawer)
    finally:
        drawer.close()


def _make_report(workspaces: list[Path], args, comparisons, drawer: DrawingProcess) -> int:
    pending: dict[Path, list[dict]] = {}
    states = [workspace_state(workspace, pending) for workspace in workspaces]
    where = list(args.where) + ([f"sweep={args.sweep}"] if args.sweep else [])
    # the rows of the filters' text equalities and the columns the page reads: what is read is read once
    columns = (["workspace"] if len(workspaces) > 1 else []) + list(results.COLUMNS)
    text = [column for column, sqltype in COLUMN_TYPES.items() if sqltype == "TEXT"]
    labels = labels_argument(args, workspaces)

    def read(only=None, columns=None):
        with table_refusals():
            try:
                frame = results.load(workspaces, pending=pending, only=only, columns=columns)
            except DamagedValue as error:
                raise damaged_value(error) from None
        return frame.drop(columns="workspace") if len(workspaces) == 1 else relabel(frame, labels)

    frame = read(text_equalities(where, columns, text), page_columns(where, comparisons, columns))
    try:
        kept = results.filter_rows(frame, where)
    except ValueError as error:
        raise UserError(f"--where: {error}") from None
    refuse_values_in_no_row(where, frame, lambda needed: read(columns=needed), args.sweep)
    frame = kept
    for column, *_ in comparisons or []:
        if column not in frame.columns:
            allowed = list(map(str, frame.columns))
            raise UserError(f"--compare: unknown column {column!r}{did_you_mean(column, allowed)}; allowed columns: "
                            f"{', '.join(allowed)}")
    try:
        page = build_report(frame, states, comparisons, title=args.title, filters=where, drawer=drawer)
    except ValueError as error:  # a compared value the rows do not hold
        raise UserError(f"--compare: {error}") from None
    write_report(args.output, page)
    print(f"wrote {args.output}: {count(len(frame), 'row')} from {count(len(workspaces), 'workspace')}")
    return 0


def workspace_state(workspace: Path, pending: dict[Path, list[dict]] | None = None) -> WorkspaceState:
    """What ``workspace``'s ledger says, after reconciling its stages with their artifacts and recording
    the finished cells exactly as a reading ``results`` or ``status`` does; the rows it must not
    record (a workspace it must not write) go to ``pending[workspace]``, for :func:`results.load`."""
    ledger = Ledger(workspace, reading=True)
    try:
        rows = bring_results_up_to_date(workspace, ledger)
        if pending is not None:
            pending[workspace] = rows
        stages = ledger.stages()
        sweeps = [{"name": row["name"], "source": row["source"], "launched": _when(row["launched_at"]),
                   "spec": json.loads(row["spec"])} for row in ledger.sweeps()]
        cells = ledger.cells()
    finally:
        ledger.close()
    counts = Counter((row["kind"], row["state"]) for row in stages)
    present = {kind for kind, _ in counts}
    kinds = []
    if present:  # the catalog of kinds loads pydantic's models of them: not for a workspace without stages
        from workers import catalog

        kinds = [kind for kind in catalog.STAGE_KINDS if kind in present] + sorted(present - set(catalog.STAGE_KINDS))
    per_kind = {kind: {state: counts[(kind, state)] for state in STATES} for kind in kinds}
    failures = [_failure(workspace, row) for row in stages if row["state"] == "failed"]
    state_of = {row["key"]: row["state"] for row in stages}
    missing = [{**dict(cell), "state": state_of.get(cell["stage_key"], "unknown")}
               for cell in cells if state_of.get(cell["stage_key"]) != "done"]
    return WorkspaceState(name=str(workspace), sweeps=sweeps, stage_counts=per_kind, states=STATES,
                          failures=failures, missing=missing, cells=len(cells),
                          **stage_records(workspace, stages, cells))


def _spread(rows: list, limit: int) -> list:
    """At most ``limit`` of ``rows``, evenly spread over them (all when they are fewer)."""
    if len(rows) <= limit:
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def stage_records(workspace: Path, stages: list, cells: list) -> dict:
    """What the stage folders say beyond the ledger: the ``provenance.json`` of the stages that ran, the
    ``epochs.jsonl`` of the done training stages (at most :data:`MAX_READ` of each kind, evenly
    spread), and the ledger's wall time of each done stage per kind."""
    from workers.stages.epochs import read_epochs
    from workers.stages.paths import stage_dir
    from workers.stages.provenance import read_provenance

    times: dict[str, list[float]] = {}
    for row in stages:
        if row["state"] == "done" and row["started_at"] is not None and row["ended_at"] is not None:
            times.setdefault(row["kind"], []).append(max(0.0, float(row["ended_at"]) - float(row["started_at"])))
    ran = [row for row in stages if row["attempts"] or row["state"] == "done"]
    found = [read_provenance(stage_dir(workspace, row["key"])) for row in _spread(ran, MAX_READ)]
    cell_of: dict[str, str] = {}
    for cell in cells:
        cell_of.setdefault(cell["stage_key"], f"{cell['mask_source']} / {cell['transfer'] or cell['init']}")
    trained: dict[str, list] = {}
    for row in stages:
        if row["state"] == "done" and row["epochs"] > 0:
            trained.setdefault(row["kind"], []).append(row)
    epochs = []
    for kind, rows in trained.items():
        for row in _spread(sorted(rows, key=lambda r: r["key"]), MAX_READ):
            entries = read_epochs(stage_dir(workspace, row["key"]))
            if entries:
                words = str(row["label"]).split()
                series = cell_of.get(row["key"]) if kind == "eval" else (words[1] if len(words) > 1 else kind)
                epochs.append({"key": row["key"], "kind": kind, "series": series or kind, "entries": entries})
    return {"provenance": [record for record in found if record is not None], "provenance_total": len(ran),
            "provenance_missing": sum(record is None for record in found), "stage_times": times, "epochs": epochs,
            "epoch_totals": {kind: len(rows) for kind, rows in trained.items()}}


def _failure(workspace: Path, row) -> FailedStage:
    """A failed stage with the tails of its own log and of its scheduler's logs."""
    from workers.stages.paths import LOG_FILE, stage_dir

    where = f"job {row['job_id']}" if row["job_id"] else f"on {row['host'] or '?'}"
    logs = []
    own = stage_dir(workspace, row["key"]) / LOG_FILE
    tail = log_tail(workspace, row["key"])
    if tail and tail != (row["error_message"] or "").strip():  # the local driver's message is this tail already
        logs.append((str(own), tail))
    if row["backend"] in BACKENDS:
        for path in backend_class(row["backend"]).log_files(workspace, row):
            logs.append((str(path), file_tail(path, workspace)))
    return FailedStage(key=row["key"], label=row["label"], error_class=row["error_class"] or "",
                   message=row["error_message"] or "", attempts=row["attempts"],
                   where=f"{row['backend'] or '?'} {where}", logs=logs)


def _when(timestamp) -> str:
    """A Unix time as ISO 8601 UTC text."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(float(timestamp), timezone.utc).isoformat(timespec="seconds")


def _comparisons(values: Sequence[str]) -> list[Comparison] | None:
    """Every ``--compare COLUMN=A,B`` (or ``A>B``, ``A<B``); None (the default comparisons) when none is given."""
    if not values:
        return None
    try:
        return [parse_compare(value) for value in values]
    except ValueError as error:
        raise UserError(f"--compare: {error}") from None

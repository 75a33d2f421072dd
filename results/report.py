"""``prunesweep report``: one self-contained HTML page of one workspace or several.

The page holds the sweeps, their provenance (:mod:`results.report_provenance`), the stage
states per kind, the failures with their log tails, the missing cells, one figure per
(dataset, network) of top-1 vs fraction remaining (:mod:`results.top1_drawing`, inline SVG),
the per-epoch curves, the pivot tables, the paired comparisons (:func:`results.compare`) and
the transfer tables. It needs no server and no
network: no script, no style sheet, no image, no font is fetched from anywhere.

This module puts the page together; the sections come from :mod:`results.report_ledger` (what
the ledgers say), :mod:`results.report_provenance` and :mod:`results.report_results` (what the
results rows say), the HTML around them from :mod:`results.report_html`.

What the ledger and the stage folders know (sweeps, stages, failures, cells, provenance,
per-epoch metrics) comes in as plain
:class:`WorkspaceState` values: this package reads no ledger (it imports nothing from the
orchestrator); ``orchestrator/commands/report.py`` fills them in.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from results.atomic_files import atomic_save_with
from results.comparison import Comparison
from results.report_html import PAGE, STYLE, escape
from results.report_ledger import failures_section, missing_section, stages_section, sweeps_section
from results.report_provenance import epoch_curves, provenance_section
from results.report_results import (
    comparison_section,
    figure_sections,
    grid_groups,
    group_curves,
    pivots_section,
    transfer_section,
)
from results.top1_drawing import DrawingProcess

#: The suffixes a report may be written to.
SUFFIXES = (".html", ".htm")
#: The sections of the page in order: id -> heading.
SECTIONS = {
    "sweeps": "Sweeps",
    "provenance": "Provenance",
    "stages": "Stage states",
    "failures": "Failures",
    "missing": "Missing cells",
    "figures": "Top-1 vs fraction of weights remaining",
    "curves": "Per-epoch training curves",
    "pivots": "Pivot tables",
    "comparisons": "Paired comparisons",
    "transfer": "Transfer tables",
}


@dataclass
class FailedStage:
    """A failed stage: its identity, why it failed and the tails of its logs (``(path, text)``)."""

    key: str
    label: str
    error_class: str
    message: str
    attempts: int = 0
    where: str = ""
    logs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class WorkspaceState:
    """What a workspace's ledger says, as the report shows it.

    ``sweeps``: mappings with ``name``, ``source`` and ``launched`` (text); ``stage_counts``:
    kind -> state -> number of stages, kinds in the order shown; ``states``: the states, in the
    order of the columns; ``missing``: the cells not done (mappings with ``sweep``,
    ``mask_source``, ``init``, ``transfer``, ``rewind``, ``nominal_fraction``, ``seed``,
    ``stage_key`` and ``state``); ``cells``: how many cells the sweeps hold in all. A sweep's
    ``spec`` is its resolved sweep file. ``provenance``: the ``provenance.json`` records read
    (of ``provenance_total`` stages that ran; ``provenance_missing`` had none); ``stage_times``:
    kind -> seconds of each done stage; ``epochs``: per stage read, ``key``, ``kind``, ``series``
    and the ``entries`` of its ``epochs.jsonl`` (of ``epoch_totals[kind]`` stages that have one).
    """

    name: str
    sweeps: Sequence[Mapping[str, Any]] = field(default_factory=list)
    stage_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    states: tuple[str, ...] = ("planned", "running", "done", "failed", "blocked")
    failures: list[FailedStage] = field(default_factory=list)
    missing: Sequence[Mapping[str, Any]] = field(default_factory=list)
    cells: int = 0
    provenance: Sequence[Mapping[str, Any]] = field(default_factory=list)
    provenance_total: int = 0
    provenance_missing: int = 0
    stage_times: Mapping[str, Sequence[float]] = field(default_factory=dict)
    epochs: Sequence[Mapping[str, Any]] = field(default_factory=list)
    epoch_totals: Mapping[str, int] = field(default_factory=dict)


def report_target_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is no name for a report (beyond :func:`results.export.target_problem`), or None."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        return f"{path}: a report is an HTML file; its name ends in {' or '.join(SUFFIXES)}"
    return None


def default_comparisons(df: pd.DataFrame) -> list[Comparison]:
    """The comparisons the paper makes, where the rows hold both sides: does the winning ticket beat
    re-initialising the same mask (one-sided: the lottery-ticket claim has a direction), and does the
    labels mask differ from every other trained mask source (two-sided: the study asks whether a
    self-supervised mask is as good, so either direction is a finding).

    Random masks are left out: they have no rewinding point (``rewind`` is ``-``), so no row of
    theirs pairs with a trained mask's.
    """
    pairs = []
    inits = set(df["init"].dropna().unique())
    if {"winning_ticket", "reinit"} <= inits:
        pairs.append(Comparison("init", "winning_ticket", "reinit", "greater"))
    sources = set(df["mask_source"].dropna().unique()) - {"random"}
    if "labels" in sources:
        pairs += [Comparison("mask_source", "labels", str(source)) for source in sorted(sources - {"labels"})]
    return pairs


def page_columns(where: Sequence[str], comparisons: Iterable[Comparison] | None,
                   columns: Sequence[str]) -> list[str] | None:
    """The columns of ``columns`` the page reads, in their order, with these filters and comparisons
    (:func:`results.load`'s ``columns``): the settings, top-1, the fractions, the seeds that pair
    rows, the transfer targets and metrics, and what the filters and comparisons name. None (all)
    when a filter or a compared column is not one of ``columns`` (the message then names them all)."""
    from results.query import columns_needed

    needed = columns_needed(where, None, None, columns)
    compared = [comparison.column for comparison in comparisons or []]
    if needed is None or any(column not in columns for column in compared):
        return None
    used = {*needed, *_PAGE_COLUMNS, *compared}
    return [column for column in columns if column in used]


#: what the page reads besides the summaries' columns: the seed pairs the comparisons' rows; the
#: transfer tables name their target dataset and metric.
_PAGE_COLUMNS = ("seed", "eval_dataset", "metric")


def build_report(df: pd.DataFrame, states: Sequence[WorkspaceState],
                 comparisons: Iterable[Comparison] | None = None, title: str | None = None,
                 filters: Sequence[str] = (), drawer: DrawingProcess | None = None) -> str:
    """The page as text: every section of :data:`SECTIONS`, in order.

    ``df`` is the (filtered) frame of :func:`results.load`, of one workspace or several;
    ``states`` what each workspace's ledger says; ``comparisons`` the :class:`~results.comparison.Comparison` list
    (default: :func:`default_comparisons`), each made with :func:`results.compare`, which
    raises :class:`ValueError` for a column or value the rows lack. ``filters`` are only named.
    ``drawer``: a :class:`~results.top1_drawing.DrawingProcess` started early, which draws the
    figures while the comparisons are made (else they are drawn here).
    """
    title = title or "prunesweep report: " + ", ".join(state.name for state in states)
    grid = df[df["transfer"].isna()] if not df.empty else df
    transfer = df[df["transfer"].notna()] if not df.empty else df
    groups = grid_groups(grid, ["dataset", "arch"])
    curves = group_curves(groups)
    epochs = epoch_curves(states)
    if drawer is not None:
        drawer.send(curves + epochs)  # drawn there while the comparisons are made here
    if comparisons is None:
        comparisons = default_comparisons(df) if not df.empty else []
    compared = [comparison_section(df, comparison) for comparison in comparisons]
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    workspaces = ", ".join(state.name for state in states)
    meta = f"{len(df):,} results rows from {len(states)} workspace(s) ({workspaces}); generated {generated}"
    if filters:
        meta += "; rows where " + " and ".join(filters)
    figures, epoch_section = figure_sections(groups, curves, epochs, drawer)
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(meta)}</p>',
        "<nav>" + " · ".join(f'<a href="#{key}">{escape(name)}</a>' for key, name in SECTIONS.items()) + "</nav>",
        _section("sweeps", sweeps_section(states)),
        _section("provenance", provenance_section(states)),
        _section("stages", stages_section(states)),
        _section("failures", failures_section(states)),
        _section("missing", missing_section(states)),
        _section("figures", figures),
        _section("curves", epoch_section),
        _section("pivots", pivots_section(groups)),
        _section("comparisons", "".join(compared) or "<p>No comparison: the rows hold no two sides to pair.</p>"),
        _section("transfer", transfer_section(transfer)),
    ]
    return PAGE.format(title=escape(title), style=STYLE, body="\n".join(body))


def write_report(path: str | os.PathLike, page: str) -> Path:
    """Write the page to ``path`` atomically (temp file in the same folder + rename); return the path."""
    data = page.encode("utf-8")
    atomic_save_with(Path(path), lambda handle: handle.write(data))
    return Path(path)


def _section(key: str, content: str) -> str:
    return f'<section id="{key}"><h2>{escape(SECTIONS[key])}</h2>{content}</section>'

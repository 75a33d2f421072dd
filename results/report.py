"""``prunesweep report``: one self-contained HTML page of one workspace or several.

The page holds the sweeps, their provenance (:mod:`results.report_provenance`), the stage
states per kind, the failures with their log tails, the missing cells, one figure per
(dataset, network) of top-1 vs fraction remaining (:mod:`results.top1_drawing`, inline SVG),
the per-epoch curves, the pivot tables, the paired comparisons (:func:`results.compare`) and
the transfer tables. It needs no server and no
network: no script, no style sheet, no image, no font is fetched from anywhere.

What the ledger and the stage folders know (sweeps, stages, failures, cells, provenance,
per-epoch metrics) comes in as plain
:class:`WorkspaceState` values: this package reads no ledger (it imports nothing from the
orchestrator); ``orchestrator/commands/report.py`` fills them in.
"""
from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from results.atomic_files import atomic_save_with
from results.comparison import Comparison
from results.report_provenance import curves_section, epoch_curves, inline_svg, provenance_section
from results.top1_drawing import Curves, DrawingProcess

#: At most this many curves in one figure; past it the figure (and its pivot table) pools
#: the sweeps and workspaces of that (dataset, network): one line per mask source x init.
MAX_CURVES = 12
#: At most this many rows of one listing (missing cells, a comparison) and failures per workspace.
MAX_ROWS = 200
MAX_FAILURES = 50
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
    groups = _groups(grid, ["dataset", "arch"])
    curves = _curves(groups)
    epochs = epoch_curves(states)
    if drawer is not None:
        drawer.send(curves + epochs)  # drawn there while the comparisons are made here
    if comparisons is None:
        comparisons = default_comparisons(df) if not df.empty else []
    compared = [_comparison(df, comparison) for comparison in comparisons]
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    workspaces = ", ".join(state.name for state in states)
    meta = f"{len(df):,} results rows from {len(states)} workspace(s) ({workspaces}); generated {generated}"
    if filters:
        meta += "; rows where " + " and ".join(filters)
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(meta)}</p>',
        "<nav>" + " · ".join(f'<a href="#{key}">{_e(name)}</a>' for key, name in SECTIONS.items()) + "</nav>",
        _section("sweeps", _sweeps(states)),
        _section("provenance", provenance_section(states)),
        _section("stages", _stages(states)),
        _section("failures", _failures(states)),
        _section("missing", _missing(states)),
        *_figure_sections(groups, curves, epochs, drawer),
        _section("pivots", _pivots(groups)),
        _section("comparisons", "".join(compared) or "<p>No comparison: the rows hold no two sides to pair.</p>"),
        _section("transfer", _transfer(transfer)),
    ]
    return _PAGE.format(title=_e(title), style=_STYLE, body="\n".join(body))


def write_report(path: str | os.PathLike, page: str) -> Path:
    """Write the page to ``path`` atomically (temp file in the same folder + rename); return the path."""
    data = page.encode("utf-8")
    atomic_save_with(Path(path), lambda handle: handle.write(data))
    return Path(path)


# --------------------------------------------------------------------------- ledger sections


def _sweeps(states: Sequence[WorkspaceState]) -> str:
    rows = [[state.name, sweep.get("name", ""), sweep.get("source", ""), sweep.get("launched", "")]
            for state in states for sweep in state.sweeps]
    if not rows:
        return "<p>No sweep has been launched into these workspaces.</p>"
    return _table(["workspace", "sweep", "sweep file", "launched"], rows)


def _stages(states: Sequence[WorkspaceState]) -> str:
    parts = []
    for state in states:
        parts.append(f"<h3>{_e(state.name)}</h3>")
        if not state.stage_counts:
            parts.append("<p>No stage.</p>")
            continue
        rows = []
        totals = dict.fromkeys(state.states, 0)
        for kind, counts in state.stage_counts.items():
            per_state = [counts.get(s, 0) for s in state.states]
            rows.append([kind, *per_state, sum(per_state)])
            for s, n in zip(state.states, per_state, strict=True):
                totals[s] += n
        rows.append(["all", *totals.values(), sum(totals.values())])
        parts.append(_table(["kind", *state.states, "total"], rows, numeric_from=1, last_row_total=True))
    return "".join(parts)


def _failures(states: Sequence[WorkspaceState]) -> str:
    parts = []
    for state in states:
        if not state.failures:
            continue
        parts.append(f"<h3>{_e(state.name)}: {len(state.failures)} failed stage(s)</h3>")
        for failure in state.failures[:MAX_FAILURES]:
            parts.append('<div class="failure">')
            parts.append(f"<h4>{_e(failure.key)} <span class=\"label\">{_e(failure.label)}</span></h4>")
            detail = f"{failure.error_class}, attempt {failure.attempts}" + (f", {failure.where}" if failure.where
                                                                            else "")
            parts.append(f"<p>{_e(detail)}</p><pre>{_e(failure.message or '(no message)')}</pre>")
            for log, tail in failure.logs:
                parts.append(f'<p class="log">last lines of {_e(log)}:</p><pre>{_e(tail or "(empty)")}</pre>')
            parts.append("</div>")
        if len(state.failures) > MAX_FAILURES:
            parts.append(f"<p>… and {len(state.failures) - MAX_FAILURES} more: "
                         f"<code>prunesweep status {_e(state.name)}</code> lists them all.</p>")
    return "".join(parts) or "<p>No failed stage.</p>"


def _missing(states: Sequence[WorkspaceState]) -> str:
    parts = []
    for state in states:
        done = state.cells - len(state.missing)
        parts.append(f"<h3>{_e(state.name)}: {done} of {state.cells} cells done, {len(state.missing)} missing</h3>")
        if not state.missing:
            continue
        rows = [[cell.get("sweep"), cell.get("mask_source"), cell.get("init"), cell.get("transfer") or "",
                 cell.get("rewind"), f"{float(cell['nominal_fraction']):g}", cell.get("seed"),
                 cell.get("stage_key"), cell.get("state")] for cell in state.missing[:MAX_ROWS]]
        parts.append(_table(["sweep", "mask source", "init", "transfer", "rewind", "fraction", "seed", "stage",
                             "state"], rows))
        if len(state.missing) > MAX_ROWS:
            parts.append(f"<p>… and {len(state.missing) - MAX_ROWS} more: "
                         f"<code>prunesweep status {_e(state.name)} --all-missing</code> lists them all.</p>")
    return "".join(parts) or "<p>No workspace.</p>"


# --------------------------------------------------------------------------- results sections


@dataclass
class _Group:
    """The pruning-grid rows of one (dataset, network), and how its curves are grouped."""

    name: str
    rows: pd.DataFrame
    by: list[str] | None
    note: str

    def sources(self) -> str:
        """Where the rows come from: ``"workspace: sweep, sweep; ..."`` (only sweeps with one workspace)."""
        if "workspace" not in self.rows.columns:
            return "sweep(s) " + ", ".join(map(str, dict.fromkeys(self.rows["sweep"])))
        pairs = self.rows[["workspace", "sweep"]].drop_duplicates()
        return "; ".join(f"{workspace}: " + ", ".join(map(str, sweeps["sweep"]))
                         for workspace, sweeps in pairs.groupby("workspace", sort=False))


def _groups(df: pd.DataFrame, columns: list[str]) -> list[_Group]:
    """One group per value of ``columns``, in order of first appearance."""
    if df.empty:
        return []
    groups = []
    for values, rows in df.groupby(columns, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        name = " / ".join(map(str, values))
        by, note = _pooled_curves(rows)
        groups.append(_Group(name, rows, by, note))
    return groups


def _pooled_curves(rows: pd.DataFrame) -> tuple[list[str] | None, str]:
    """None (a curve per setting, as ``results --plot``) unless that is more than :data:`MAX_CURVES` curves;
    then the mask source x init curves pooled over the sweeps and workspaces, and a note saying so."""
    identity = [c for c in ("workspace", "sweep", "mask_source", "init", "rewind") if c in rows.columns]
    curves = rows[identity].assign(one_shot=rows["level"].isna()).drop_duplicates()
    if len(curves) <= MAX_CURVES:
        return None, ""
    by = ["mask_source", "init"]
    if rows.loc[rows["mask_source"] != "random", "rewind"].nunique() > 1:
        by.append("rewind")
    sweeps = rows[[c for c in ("workspace", "sweep") if c in rows.columns]].drop_duplicates()
    workspaces = rows["workspace"].nunique() if "workspace" in rows.columns else 1
    note = (f"{len(curves)} curves: pooled over {len(sweeps)} sweep(s) in {workspaces} workspace(s), one line per "
            f"{' x '.join(by)} (n counts seeds: a seed's rows are averaged first, never counted twice); narrow with "
            "--where for one sweep's curves")
    return by + ["nominal_fraction"], note


def _curves(groups: list[_Group]) -> list[Curves]:
    """What each group's figure draws."""
    if not groups:
        return []
    from results.plot import top1_curves

    return [top1_curves(group.rows, title=group.name, by=group.by) for group in groups]


def _figure_sections(groups: list[_Group], curves: list[Curves], epochs: list[Curves],
                     drawer: DrawingProcess | None) -> list[str]:
    """The sections of the top-1 figures and of the per-epoch curves, their SVGs drawn by ``drawer``."""
    images = drawer.images() if drawer is not None and (curves or epochs) else None
    if images is None:  # no second process, or it failed: drawn here, the same figures
        from results.top1_drawing import svg

        images = [svg(one) for one in curves + epochs]
    top1 = "<p>No results on the pruning grid yet.</p>"
    if groups:
        parts = ['<div class="figures">']
        for number, (group, one, image) in enumerate(zip(groups, curves, images, strict=False)):
            parts.append(f"<figure>{inline_svg(image, f'top-1 vs fraction remaining: {group.name}', f'f{number}')}"
                         f"<figcaption>{_e(group.name)} ({_e(group.sources())}): {_e(one['note'])}"
                         + (f"<br>{_e(group.note)}" if group.note else "") + "</figcaption></figure>")
        top1 = "".join(parts) + "</div>"
    return [_section("figures", top1), _section("curves", curves_section(epochs, images[len(curves):]))]


def _pivots(groups: list[_Group]) -> str:
    if not groups:
        return "<p>No results on the pruning grid yet.</p>"
    parts = ["<p>Top-1 in percent, mean ± standard error (n) over seeds, per fraction of weights remaining "
             "(measured).</p>"]
    for group in groups:
        parts.append(f"<h3>{_e(group.name)}</h3>" + (f"<p>{_e(group.note)}</p>" if group.note else ""))
        parts.append(_pivot_table(group.rows, group.by))
    return "".join(parts)


def _pivot_table(rows: pd.DataFrame, by: list[str] | None = None) -> str:
    from results.query import pivot

    try:
        table = pivot(rows, by=by)
    except ValueError as error:  # two settings in one cell: say which, as `results --pivot` does
        return f'<p class="problem">{_e(error)}</p>'
    header = [str(table.index.name), *map(str, table.columns)]
    body = [[index, *values] for index, values in zip(table.index, table.itertuples(index=False), strict=True)]
    return _table(header, body, numeric_from=1)


def _comparison(df: pd.DataFrame, comparison: Comparison) -> str:
    from results.comparison import compare, comparison_display, describe_test

    column, a, b, alternative = comparison
    result = compare(df, column, a, b, alternative=alternative)
    sign = {"two-sided": "vs", "greater": "&gt;", "less": "&lt;"}[alternative]
    parts = [f"<h3>{_e(column)}: {_e(a)} {sign} {_e(b)}</h3>",
             f"<p>Top-1 of {_e(column)}={_e(a)} minus {_e(column)}={_e(b)}, in percentage points, paired by seed "
             f"over the seeds both share; {_e(describe_test(result))}."]
    if result.attrs.get("averaged"):
        parts.append(f" {result.attrs['averaged']} row(s) repeating a side's setting and seed were averaged into one:"
                     " no seed counts twice.")
    if result.attrs.get("unpaired"):
        parts.append(f" {result.attrs['unpaired']} setting(s) with no seed on both sides are left out.")
    parts.append("</p>")
    if result.empty:
        return "".join(parts) + "<p>No setting has a seed on both sides.</p>"
    common, shown = comparison_display(result, rows=MAX_ROWS)
    if common:
        parts.append(f"<p>In every row: {_e(common)}</p>")
    significant = result["significant"].head(MAX_ROWS).tolist()
    parts.append(_table(list(map(str, shown.columns)), shown.itertuples(index=False),
                        numeric_from=list(shown.columns).index(a), marked=significant))
    if len(result) > MAX_ROWS:
        separator = {"two-sided": ",", "greater": ">", "less": "<"}[alternative]
        parts.append(f"<p>… and {len(result) - MAX_ROWS} more rows: <code>prunesweep results WS... --compare "
                     f"'{_e(column)}={_e(a)}{separator}{_e(b)}'</code> prints them all.</p>")
    return "".join(parts)


def _transfer(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "<p>No transfer evaluation in these results.</p>"
    rows = rows.assign(eval_dataset=rows["eval_dataset"].fillna(rows["dataset"]),
                       metric=rows["metric"].fillna("top1"))
    parts = []
    for (dataset, arch, target, metric), group in rows.groupby(["dataset", "arch", "eval_dataset", "metric"],
                                                                sort=False, dropna=False):
        what = {"map": "mAP", "map_11point": "11-point mAP"}.get(str(metric), "top-1")
        parts.append(f"<h3>{_e(dataset)} / {_e(arch)} → {_e(target)} ({_e(what)})</h3>")
        parts.append(f"<p>{_e(what)} in percent, mean ± standard error (n) over seeds; columns: mask source / "
                     "linear classifier, fine-tuning or pruning during fine-tuning.</p>")
        parts.append(_pivot_table(group))
    return "".join(parts)


# --------------------------------------------------------------------------- HTML


def _e(value: object) -> str:
    """``value`` as HTML text."""
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))


def _section(key: str, content: str) -> str:
    return f'<section id="{key}"><h2>{_e(SECTIONS[key])}</h2>{content}</section>'


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric_from: int | None = None,
           last_row_total: bool = False, marked: Sequence[bool] | None = None) -> str:
    """An HTML table; columns from ``numeric_from`` on are right-aligned, ``marked`` rows highlighted."""
    def cell(index: int, value: object, tag: str) -> str:
        numeric = numeric_from is not None and index >= numeric_from
        return f"<{tag}{_NUM if numeric else ''}>{_e(value)}</{tag}>"

    out = ["<table><thead><tr>", *(cell(i, name, "th") for i, name in enumerate(header)), "</tr></thead><tbody>"]
    rows = list(rows)
    for number, row in enumerate(rows):
        classes = []
        if marked is not None and number < len(marked) and marked[number]:
            classes.append("sig")
        if last_row_total and number == len(rows) - 1:
            classes.append("total")
        out.append(f'<tr class="{" ".join(classes)}">' if classes else "<tr>")
        out.extend(cell(i, value, "td") for i, value in enumerate(row))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


_NUM = ' class="num"'

_STYLE = """
body { font-family: sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; } h4 { margin: .3em 0; }
.meta { color: #555; } nav a { margin: 0 .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; } td.num, th.num { text-align: right; }
tr.total td { font-weight: bold; } tr.sig td { background: #fff3c4; }
.figures { display: flex; flex-direction: column; gap: 1.5em; }
figure { margin: 0; } svg.plot { display: block; width: 100%; max-width: 1500px; height: auto; }
figcaption { color: #444; } details { margin: .4em 0; } summary { cursor: pointer; }
pre { background: #f7f7f7; padding: .5em; overflow-x: auto; max-height: 20em; }
.failure { border-left: 3px solid #c33; padding-left: .8em; margin-bottom: 1em; }
.label { font-weight: normal; color: #555; } .problem { color: #a00; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""
